"""`orchestrator export-tensorboard`: each run's intervals as TensorBoard scalars.

One folder per run under the log dir (`<logdir>/<run id>/`), so TensorBoard lists runs side by
side; scalars `wer/domain`, `wer/heldout`, `wer/select`, `loss/eval`, `loss/train` and `lr` at
each interval's step and time, plus the run's status and stop reason as text. Written with
tensorboardX (the `tensorboard` extra), which needs no torch. Exporting a run again replaces its
event files.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.registry import Run

SCALARS = {"domain_wer": "wer/domain", "heldout_wer": "wer/heldout", "select_wer": "wer/select",
           "eval_loss": "loss/eval", "train_loss": "loss/train", "lr": "lr"}
EVENTS = "events.out.tfevents.*"


def export_runs(runs: Sequence[Run], logdir: Path) -> list[Path]:
    """Write an event file per run; returns the run folders written."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise OrchestratorError("tensorboardX is not installed", where="export-tensorboard",
                                fix='pip install -e ".[tensorboard]"') from None
    written = []
    for run in runs:
        folder = Path(logdir) / run.id
        for old in folder.glob(EVENTS):
            old.unlink()
        writer = SummaryWriter(logdir=str(folder))
        try:
            for interval in run.intervals:
                walltime = (interval.created_at or run.started_at).timestamp()
                for field, tag in SCALARS.items():
                    value = getattr(interval, field)
                    if value is not None:
                        writer.add_scalar(tag, float(value), global_step=interval.step, walltime=walltime)
            ended = f"; {run.stop_reason}" if run.stop_reason else ""
            writer.add_text("run", f"{run.experiment}: {run.status}{ended} ({run.model_id}, lr {run.lr:g}, "
                                   f"{run.target_summary})", global_step=run.final.step if run.final else 0)
        finally:
            writer.close()
        written.append(folder)
    return written
