"""The run matrix and the interval tables of EXPERIMENTS.md."""
from __future__ import annotations

from collections.abc import Sequence

from orchestrator.acceptance.verdicts import PLANNED, matrix_status
from orchestrator.registry import Interval, Run, RunStatus
from orchestrator.report import curves
from orchestrator.report.collect import ReportData
from orchestrator.report.markdown import MISSING, _compute, _inline, _lr, _num, _pct, _table

STATUS_NOTE = (
    "_Status is derived — `planned` (declared in conf/exp/, not run yet), `running`, "
    "`interrupted`, `failed` (crashed, or the verdict failed), `passed`, `inconclusive` — "
    "unless a person annotated the run (`orchestrator annotate`); a run left `running` by a "
    "process that died shows `interrupted`. Tuned = the best interval within the heldout guard "
    "(see Verdicts). Compute: device and precision, peak memory (CUDA allocated, else the process's "
    "peak RSS), training utterances per second, evaluation speed in x real time. ⚠ marks a "
    "learning rate at or above 2e-4, where the seeds saw catastrophic forgetting._"
)

def run_matrix(runs: Sequence[Run] | ReportData) -> str:
    """One row per run, then one per planned experiment. WER cells read
    "baseline / tuned / final" in percent: tuned is the interval `verdicts.select_best` picks,
    and the heldout WER is shown at that same interval."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    headers = [
        "Run ID",
        "Experiment",
        "Model",
        "Steps",
        "LR",
        "Adapter",
        "Target Modules",
        "Status",
        "Run state",
        "Domain WER (baseline / tuned / final)",
        "Heldout WER (baseline / tuned / final)",
        "Compute",
        "Note",
    ]
    rows = [data.piece("matrix", [run], lambda run=run: _matrix_row(run, data)) for run in data.runs]
    triple = " / ".join([MISSING] * 3)
    for name in data.planned:
        rows.append([MISSING, name, *[MISSING] * 5, PLANNED, MISSING, triple, triple, MISSING, ""])
    if not rows:
        return "_No runs recorded yet._"
    return _table(headers, rows, align="lllrrllllrrll") + "\n\n" + STATUS_NOTE


def _matrix_row(run: Run, data: ReportData) -> list[str]:
    verdict = data.verdict(run)
    picks = (run.baseline, verdict.selection.interval if verdict.selection else None, run.final)
    return [
        run.id,
        run.experiment,
        run.model_id,
        str(run.steps),
        _lr(run.lr),
        "DoRA" if run.dora else "LoRA",
        run.target_summary,
        matrix_status(run, verdict),
        "external" if run.external else run.status,
        _wer_triple(picks, "domain_wer"),
        _wer_triple(picks, "heldout_wer"),
        _compute(run),
        _note(run),
    ]


INTERVAL_RUNS = 25  # interval tables for the most recent runs only: at 10,000 runs they would be 68 MB


def interval_tables(runs: Sequence[Run] | ReportData) -> str:
    """Per run (the INTERVAL_RUNS most recent), a `### <run id>` heading and a table of every
    recorded interval; `orchestrator runs --json` has them all."""
    runs = runs.runs if isinstance(runs, ReportData) else runs
    if not runs:
        return "_No runs recorded yet._"
    headers = ["Step", "LR", "Train loss", "Eval loss", "Domain WER %", "Heldout WER %"]
    sections = []
    if len(runs) > INTERVAL_RUNS:
        sections.append(f"_The {INTERVAL_RUNS} most recent of {len(runs)} runs; "
                        "`orchestrator runs --json` lists every interval of every run._")
        runs = runs[-INTERVAL_RUNS:]
    for run in runs:
        rows = [
            [
                str(i.step),
                _num(i.lr, "g"),
                _num(i.train_loss, ".4f"),
                _num(i.eval_loss, ".4f"),
                _pct(i.domain_wer),
                _pct(i.heldout_wer),
            ]
            for i in run.intervals
        ]
        body = _table(headers, rows, align="rrrrrr") if rows else "_No intervals recorded._"
        if rows:  # the PNG (and SVG) update_experiments_md writes beside EXPERIMENTS.md
            body = f"![WER and loss by step]({curves.link(run.id)}) ([SVG]({curves.svg_link(run.id)}))\n\n{body}"
        sections.append(f"### {_inline(run.id)}\n\n{body}")
    return "\n\n".join(sections)


def _note(run: Run) -> str:
    if run.annotation_note:
        return run.annotation_note
    if run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED) and run.failure_reason:
        return run.failure_reason
    return run.stop_reason or ""  # why it ended before its last step (early stopping, pruned)


def _wer_triple(picks: Sequence[Interval | None], field: str) -> str:
    """`field` of each of (baseline, tuned, final), in percent, "baseline / tuned / final"."""
    return " / ".join([_pct(getattr(i, field)) if i else MISSING for i in picks])


