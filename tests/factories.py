"""Registry entities built by hand, for tests of what reads them (report, verdicts, entities).

`make_run(**fields)` is a finished tool run with three intervals; any field can be replaced.
`interval(step, domain, heldout, **fields)` leaves every metric it is not given as None.
"""
from __future__ import annotations

from datetime import datetime, timezone

from orchestrator.registry import Interval, Run

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def interval(step: int, domain: float | None = None, heldout: float | None = None, **fields) -> Interval:
    values = dict(step=step, lr=None, train_loss=None, eval_loss=None, domain_wer=domain, heldout_wer=heldout,
                  domain_utts=None, heldout_utts=None, created_at=NOW)
    return Interval(**{**values, **fields})


def reported(step: int, domain: float | None, heldout: float | None = None) -> Interval:
    """An interval as a tool run records it: lr, losses and utterance counts filled in."""
    return interval(step, domain, heldout, lr=1e-4, train_loss=1.25, eval_loss=1.5, domain_utts=10, heldout_utts=10)


def make_run(run_id: str = "exp_a-1", experiment: str = "exp_a", **fields) -> Run:
    values = dict(
        id=run_id,
        experiment=experiment,
        status="finished",
        config={},
        config_hash="h",
        model_id="moonshine-tiny",
        targets=["q_proj"],
        target_summary="decoder q (4)",
        lr=1e-4,
        steps=100,
        dora=False,
        git_commit=None,
        data_stats={},
        started_at=NOW,
        ended_at=NOW,
        failure_reason=None,
        intervals=(reported(0, 0.30, 0.10), reported(50, 0.1234, 0.11), reported(100, 0.15, 0.12)),
    )
    return Run(**{**values, **fields})
