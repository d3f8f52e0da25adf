"""Verdict sections of EXPERIMENTS.md: the verdict matrix, each run's criteria, and the
replication groups (runs differing only in optim.seed)."""
from __future__ import annotations

from collections.abc import Sequence

from orchestrator.acceptance.verdicts import MAX_TYPE, DEV_SET, NA, TITLES, Comparison, RunVerdict
from orchestrator.registry import Run, RunStatus
from orchestrator.report.collect import ReportData
from orchestrator.report.markdown import MISSING, _compute, _inline, _pct, _table

VERDICT_MATRIX_NOTE = (
    "_Every run's verdict on each acceptance criterion, oldest first (Overall `pending`: the run is "
    "still training). The sections after the table show what each criterion measured, for the "
    "{recent} most recent of {total} runs; `orchestrator report --run RUN_ID` prints any run's._"
)

VERDICT_RUNS = 25  # detailed verdict sections for the most recent runs; the verdict matrix has every run


def verdict_sections(runs: Sequence[Run] | ReportData) -> str:
    """Per run: the overall verdict, baseline / tuned / delta per manifest with the bootstrap
    interval and P(improvement), and each criterion's verdict with what it measured.

    Past VERDICT_RUNS runs, a verdict matrix (every run's verdict on each criterion) comes first
    and the detailed sections cover the VERDICT_RUNS most recent runs: two tables for each of
    10,000 runs would be 25 MB nobody reads. `orchestrator report --run RUN_ID` prints any run's."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    if not data.runs:
        return "_No runs recorded yet._"
    runs, parts = data.runs, []
    if len(runs) > VERDICT_RUNS:
        parts += [VERDICT_MATRIX_NOTE.format(recent=VERDICT_RUNS, total=len(runs)), verdict_matrix(data)]
        runs = runs[-VERDICT_RUNS:]
    if data.group_members or data.groups:
        parts.append(group_sections(data))
    parts += [_verdict_section(run, data.verdict(run)) for run in runs]
    return "\n\n".join(parts)


GROUP_NOTE = (
    "_Replication: runs whose configs differ only in `optim.seed` (e.g. `python -m orchestrator -m "
    "+exp=... optim.seed=0,1,2`). Group verdict: criterion 1 on a two-level bootstrap (seeds, then "
    "utterances with shared indices), each seed at its tuned step with the same allowance for the pick "
    "as its own verdict. `reproducible` needs {min_seeds} or more seeds and a group PASS._"
)


def group_sections(data: ReportData) -> str:
    """One row per replication group: seeds, the group verdict with its interval, k of n seeds PASS."""
    from orchestrator.acceptance.groups import MIN_SEEDS

    judged = {g.run_ids: g for g in data.groups}
    if data.group_members:  # judged by collect, or kept (pieces.py)
        rows = [data.piece("group", members, lambda members=members: _group_row(judged[tuple(r.id for r in members)]))
                for members in data.group_members]
    else:
        rows = [_group_row(g) for g in data.groups]
    table = _table(["Experiment", "Seeds", "Group verdict", "Domain reduction (group CI)", "Seeds passing",
                    "How", "Runs"], rows, align="lllrlll")
    return "#### Replication groups\n\n" + table + "\n\n" + GROUP_NOTE.format(min_seeds=MIN_SEEDS)


def _group_row(g) -> list[str]:
    value = MISSING if g.reduction is None else f"{g.reduction:+.2f} pts [{g.low:+.2f}, {g.high:+.2f}]"
    status = "reproducible" if g.reproducible else g.status
    return [g.experiment, ", ".join(map(str, g.seeds)), status, value, f"{g.passed} of {len(g.seeds)} seeds PASS",
            g.note, ", ".join(g.run_ids)]


def verdict_matrix(runs: Sequence[Run] | ReportData) -> str:
    """One row per run: its overall verdict and its verdict on each criterion (PASS, FAIL,
    INCONCLUSIVE or N/A)."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    rows = [data.piece("verdicts", [run], lambda run=run: _matrix_row(run, data.verdict(run))) for run in data.runs]
    headers = ["Run ID", "Overall", *TITLES.values()]
    return _table(headers, rows, align="l" * len(headers))


def _matrix_row(run: Run, verdict: RunVerdict) -> list[str]:
    status = {v.name: v.status for v in verdict.criteria}
    return [run.id, "pending" if run.status == RunStatus.RUNNING else verdict.overall, *map(status.get, TITLES)]


def _verdict_section(run: Run, verdict: RunVerdict) -> str:
    overall = f"**Overall: {verdict.overall}** — {_inline(verdict.reason)}"
    if run.status == RunStatus.RUNNING:  # verdicts on a run still training are provisional
        overall = f"**Overall: pending** — the run is still training (so far: {verdict.overall})"
    lines = [f"### {_inline(run.id)}", "", f"- {overall}"]
    if run.annotation_status:
        note = f": {_inline(run.annotation_note)}" if run.annotation_note else ""
        lines.append(f"- Annotated **{_inline(run.annotation_status)}**{note}")
    if run.stop_reason:
        lines.append(f"- Ended at step {run.final.step if run.final else 0} of {run.steps} ({_inline(run.status)}): "
                     f"{_inline(run.stop_reason)}")
    selection = verdict.selection
    if selection is None:
        lines.append("- Tuned: no trained interval yet.")
    else:
        guard = ("within the heldout guard" if selection.within_guard else
                 "**outside the heldout guard**: no trained interval stayed within "
                 f"{verdict.thresholds.max_heldout_regression:g} pts, lowest domain WER kept")
        lines.append(f"- Tuned: step {selection.interval.step} ({guard}), picked on the "
                     f"{'dev set (eval.select_manifest)' if selection.by == 'select' else 'domain set'}.")
    lines.append(f"- Interval of criteria 1-2: {_METHOD.get(verdict.method, verdict.method)}.")
    if run.precision or run.peak_memory_mb is not None:
        lines.append(f"- Compute: {_inline(_compute(run, long=True))}.")
    if run.external:
        lines.append("- External run (entered with `orchestrator record`): judged on what it reported.")
    comparison = _table(
        ["Manifest", "Baseline WER %", "Tuned WER %", "Delta (pts)",
         f"{verdict.thresholds.confidence_text} CI (pts)", "P(improvement)", "How"],
        [_comparison_row(c) for c in verdict.comparisons.values()],
        align="lrrrrrl",
    )
    criteria = _table(
        ["#", "Criterion", "Threshold", "Verdict", "Value", "Detail"],
        [[str(n), v.title, v.threshold, v.status if v.status != NA else "N/A", v.value, v.detail]
         for n, v in enumerate(verdict.criteria, start=1)],
        align="rlllll",
    )
    return "\n".join(lines) + "\n\n" + comparison + "\n\n" + criteria


_METHOD = {
    DEV_SET: "plain paired bootstrap on the domain set (a dev set picked the checkpoint, so it is untouched); "
             "heldout: max-type band (the guard read it)",
    MAX_TYPE: "max-type band simultaneous over every trained interval (the checkpoint was picked on the domain "
              "set itself; no eval.select_manifest)",
    "single candidate": "paired bootstrap (one trained interval: nothing was picked)",
    "point estimate": "none (point estimate)",
}


def _comparison_row(c: Comparison) -> list[str]:
    ci = MISSING if c.ci_low is None else f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
    return [
        c.split,
        _pct(c.baseline_wer),
        _pct(c.tuned_wer),
        MISSING if c.delta is None else f"{c.delta:+.2f}",
        ci,
        MISSING if c.p_improvement is None else f"{c.p_improvement:.3f}",
        c.note,
    ]


