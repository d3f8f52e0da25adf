"""A campaign on the terminal: one line per run while it trains, a summary table when it is done.

What `orchestrator watch` prints. Everything comes from the registry (the trainer records its
step, loss and phase every few seconds, store.progress), so the lines are the same however many
processes, launchers or machines run the campaign, and nothing interleaves.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from orchestrator.registry import Run, RunStatus
from orchestrator.report.markdown import MISSING

HEADERS = ("run", "lr", "seed", "step", "loss", "domain WER", "heldout WER", "now", "ETA")


def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{100 * x:.2f}"


def _seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def seed_of(run: Run) -> str:
    seed = (run.config or {}).get("optim", {}).get("seed")
    return MISSING if seed is None else str(seed)


def eta(run: Run, now: datetime) -> str:
    """Time left: the trainer's own forecast (training/pace.py: the schedule's steps and evaluations
    left at their measured pace) when it gave one, else the steps left at its steps per second
    since it started ("?" until it has one)."""
    if run.status != RunStatus.RUNNING:
        return MISSING
    if run.progress_ends_at is not None:
        return _seconds((run.progress_ends_at - now).total_seconds())
    step = run.progress_step or 0
    elapsed = (now - run.started_at).total_seconds()
    if step <= 0 or elapsed <= 0:
        return "?"
    return _seconds((run.steps - step) * elapsed / step)


def line_cells(run: Run, now: datetime) -> list[str]:
    """The cells of one run's progress line."""
    first, last = run.baseline, run.final
    step = run.progress_step if run.progress_step is not None else (last.step if last else 0)
    if run.status == RunStatus.RUNNING:
        doing = run.progress_phase or "starting"
    else:
        doing = str(run.status) + (f" ({run.stop_reason})" if run.stop_reason else "")
    domain = MISSING if last is None else f"{_pct(first.domain_wer if first else None)} -> {_pct(last.domain_wer)}"
    heldout = MISSING if last is None else f"{_pct(first.heldout_wer if first else None)} -> {_pct(last.heldout_wer)}"
    loss = MISSING if run.progress_loss is None else f"{run.progress_loss:.4f}"
    return [run.id, f"{run.lr:g}", seed_of(run), f"{step}/{run.steps}", loss, domain, heldout, doing, eta(run, now)]


def progress_table(runs: Sequence[Run], now: datetime | None = None) -> str:
    """One line per run, columns aligned (tabulate's plain format: no rules to redraw)."""
    from tabulate import tabulate

    now = now or datetime.now(timezone.utc)
    return tabulate([line_cells(r, now) for r in runs], headers=HEADERS, tablefmt="plain", disable_numparse=True)


def summary_table(runs: Sequence[Run], utterances=None) -> str:
    """The campaign's closing table: each run's verdict (judged on the per-utterance errors of
    `utterances`, a Store, as the report judges it), what it changed, and the replication groups."""
    from tabulate import tabulate

    from orchestrator.report.collect import collect

    data = collect(runs, utterances=utterances)
    rows = []
    for run in data.runs:
        verdict = data.verdict(run)
        picked = verdict.selection.interval if verdict.selection else None
        base = run.baseline
        failed = [v.title for v in verdict.criteria if v.status in ("FAIL", "INCONCLUSIVE")]

        def delta(field: str) -> str:
            if base is None or picked is None:
                return MISSING
            return f"{_pct(getattr(base, field))} -> {_pct(getattr(picked, field))}"

        rows.append([run.id, run.experiment, f"{run.lr:g}", seed_of(run), "DoRA" if run.dora else "LoRA",
                     run.target_summary, MISSING if picked is None else str(picked.step), delta("domain_wer"),
                     delta("heldout_wer"), verdict.overall + (f": {', '.join(failed)}" if failed else "")])
    table = tabulate(rows, headers=["run", "experiment", "lr", "seed", "adapter", "targets", "tuned step",
                                    "domain WER", "heldout WER", "verdict"], disable_numparse=True)
    groups = [f"{g.experiment}: {g.passed} of {len(g.seeds)} seeds PASS, group verdict "
              f"{'reproducible' if g.reproducible else g.status}" for g in data.groups]
    return "\n".join([table, *groups])
