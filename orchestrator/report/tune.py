"""The `tune` block of EXPERIMENTS.md and the campaign verdict, from the registry alone.

A campaign's trials are the registry runs whose sweep_id is the study's name (it starts with
`tune-`); each is judged like any run (`verdicts.judge`, through the report's ReportData), so
the campaign verdict follows the run verdicts, whatever rule they use. No torch, no Optuna.

  MET      the first run, in trial order, whose verdict is PASS: its domain WER change with the
           bootstrap interval, and its heldout regression. Trial order is the study's trial numbers
           (check `tune`), as the workers' own stop rule reads them: two trials started in the same
           second by two workers keep the study's order.
  NOT MET  the best feasible run (tuned interval inside the heldout guard, lowest dev-set WER, else domain),
           which criteria it failed, and what to try next.

A campaign ends at whichever trial passes first, so any of its trials could be the one reported:
each is judged family-wise (`CriteriaConf.family_wise`), at confidence 1 - (1 - c) / B where B is
the largest tune.budget_runs its trials recorded (check `tune`), at least the trials run. The
chance that a campaign is MET by a trial that passed by luck stays within 1 - c.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.acceptance.outcome import INCONCLUSIVE, PASS
from orchestrator.registry.entities import Run, RunStatus
from orchestrator.report.markdown import MISSING, _flat, _inline

TUNE_PREFIX = "tune-"  # every tune study's name starts with it (tuning/study.py names them; the report finds them)
TUNE_CHECK = "tune"  # the check each trial's run records: {study, trial, budget_runs}


@dataclass(frozen=True)
class CampaignVerdict:
    met: bool
    run: Run | None  # the first PASS, or the best feasible run
    headline: str
    details: list[str] = field(default_factory=list)


def campaign_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Tune campaigns by study name, each run list in trial order (`trial_order`)."""
    found: dict[str, list[Run]] = {}
    for run in runs:
        if run.sweep_id and run.sweep_id.startswith(TUNE_PREFIX):
            found.setdefault(run.sweep_id, []).append(run)
    return {k: trial_order(v) for k, v in found.items()}


def trial_order(runs: Sequence[Run]) -> list[Run]:
    """`runs` by the study's trial number (check `tune`, recorded when a trial ends), then start time;
    a run whose trial has recorded none yet (in flight, or its worker killed) comes after those that have."""
    def key(run: Run):
        check = run.check(TUNE_CHECK)
        trial = check.details.get("trial") if check is not None else None
        return (math.inf if trial is None else int(trial), run.started_at, run.id)
    return sorted(runs, key=key)


def campaign_looks(runs: Sequence[Run]) -> int:
    """How many trials' verdicts could end the campaign: the largest tune.budget_runs its trials
    recorded (a budget raised on a re-run counts), at least the number of trials run."""
    budgets = [int(c.details.get("budget_runs", 0)) for c in (r.check(TUNE_CHECK) for r in runs) if c is not None]
    return max([len(runs), *budgets])


def family_judge(runs: Sequence[Run], utterances, *, root=None, default=None) -> Callable[[Run], object]:
    """Each of a campaign's `runs` judged family-wise (at `campaign_looks(runs)`), once each: what
    the report, `orchestrator tune`'s summary and bench/tune_vs_grid.py all show."""
    from orchestrator.acceptance.verdicts import criteria_for, judge

    looks, cache = campaign_looks(runs), {}

    def verdict_of(run: Run):
        if run.id not in cache:
            cache[run.id] = judge(run, utterances, criteria_for(run, default).family_wise(looks), root=root)
        return cache[run.id]
    return verdict_of


def compute(run: Run) -> tuple[int, int]:
    """(train steps, evaluation passes) a run spent: its last evaluated step, and one pass per
    interval plus the parity re-check of a completed run."""
    steps = max((i.step for i in run.intervals), default=0)
    return steps, len(run.intervals) + (1 if run.check("parity") is not None else 0)


def campaign_verdict(runs: Sequence[Run], verdict_of: Callable[[Run], object]) -> CampaignVerdict:
    """`verdict_of`: each run's family-wise verdict (judged at `campaign_looks(runs)`)."""
    runs = trial_order(runs)
    if not runs:
        return CampaignVerdict(False, None, "NOT MET: no run yet", ["start it: orchestrator tune +exp=NAME"])
    steps = sum(compute(r)[0] for r in runs)
    passes = sum(compute(r)[1] for r in runs)
    cost = f"{len(runs)} run(s), {steps} train steps, {passes} evaluation passes"
    looks = campaign_looks(runs)
    family = (f"every trial judged at {verdict_of(runs[0]).thresholds.confidence_text} confidence, "
              f"Bonferroni over {looks} possible trials, so that the campaign's chance of a lucky PASS stays "
              f"within {100 * (1 - verdict_of(runs[0]).thresholds.confidence) * looks:.3g}%") if looks > 1 else None
    for n, run in enumerate(runs, 1):
        v = verdict_of(run)
        if run.status == RunStatus.COMPLETED and v.overall == PASS:
            return CampaignVerdict(True, run, f"MET by {run.id} (run {n} of {len(runs)} in trial order; {cost})",
                                   [_evidence(v), *([family] if family else [])])
    feasible = [r for r in runs if _tuned(verdict_of(r)) is not None and verdict_of(r).selection.within_guard]
    if not feasible:
        lines = ["no run kept the heldout regression within the guard"] + _advice(runs, None, verdict_of)
        return CampaignVerdict(False, None, f"NOT MET: no feasible run ({cost})", lines)
    best = min(feasible, key=lambda r: (_picking_wer(_tuned(verdict_of(r))), r.started_at))
    v = verdict_of(best)
    failed = v.reason if best.status == RunStatus.COMPLETED else f"{best.status}: {best.stop_reason or best.failure_reason}"
    lines = [f"best feasible run {best.id}: {_evidence(v)}", f"what failed: {failed}", *([family] if family else [])]
    return CampaignVerdict(False, best, f"NOT MET ({cost})", lines + _advice(runs, best, verdict_of))


def _tuned(verdict):
    return verdict.selection.interval if verdict.selection is not None else None


def _evidence(v) -> str:
    tuned = _tuned(v)
    d, h = v.comparisons.get("domain"), v.comparisons.get("heldout")
    parts = []
    if d is not None and d.baseline_wer is not None and d.tuned_wer is not None:
        text = f"domain WER {_pct(d.baseline_wer)} → {_pct(d.tuned_wer)}"
        if d.delta is not None:
            text += f" ({d.delta:+.2f} points"
            if d.ci_low is not None and d.ci_high is not None:
                text += f", {v.thresholds.confidence_text} CI {d.ci_low:+.2f} to {d.ci_high:+.2f}"
            text += ")"
        parts.append(text)
    if h is not None and h.delta is not None:
        parts.append(f"heldout {h.delta:+.2f} points")
    if tuned is not None:
        parts.append(f"at step {tuned.step}")
    return ", ".join(parts) or "no tuned interval"


def _advice(runs: Sequence[Run], best: Run | None, verdict_of) -> list[str]:
    """What to try next, from what stopped the runs."""
    tips = []
    guard = sum(1 for r in runs if r.status == RunStatus.PRUNED and (r.stop_reason or "").startswith("heldout guard"))
    if guard * 2 >= len(runs) or best is None:
        tips.append("the heldout guard stops most runs: lower the LR range, raise data.replay_fraction, or adapt "
                    "fewer modules (targets)")
    if best is not None:
        names = {c.name for c in verdict_of(best).criteria if c.status != PASS}
        if "domain_reduction" in names:
            tips.append("the domain gain is short of the threshold: longer runs (optim.steps) or a higher LR range")
        if "stability" in names or "convergence" in names:
            tips.append("runs end before a plateau: more steps, or evaluate more often (eval.interval)")
        if verdict_of(best).overall == INCONCLUSIVE:
            tips.append("the bootstrap interval straddles a threshold: more evaluation utterances or steps")
    tips.append("raise tune.budget_runs and run the same command: the study continues")
    return ["try: " + t for t in tips]


# --- the block --------------------------------------------------------------------------------

def tune_sections(data) -> str:
    """Per tune campaign: its verdict, a table of its trials in order, and a Mermaid xychart of
    each trial's tuned domain WER with the best feasible so far. `data`: the report's ReportData."""
    campaigns = campaign_runs(data.runs)
    if not campaigns:
        return "_No tune campaigns recorded yet (`orchestrator tune +exp=NAME tune.budget_runs=N` runs one)._"
    return "\n\n".join(data.piece("tune", runs, lambda name=name, runs=runs: _section(name, runs, _family(runs, data)))
                       for name, runs in campaigns.items())


def _family(runs: Sequence[Run], data) -> Callable[[Run], object]:
    if campaign_looks(runs) <= 1:  # family-wise over one look is the run's own verdict: judged already
        return data.verdict
    return family_judge(runs, data.utterances, root=data.root, default=data.criteria)


def _stopped(run: Run) -> str:
    """Why a trial's run ended early; for one whose worker died, how the campaign takes it up."""
    why = run.stop_reason or run.failure_reason or ""
    if run.status == RunStatus.INTERRUPTED:
        why += "; re-running the `orchestrator tune` command retries its trial and resumes this run"
    return why


def _section(name: str, runs: list[Run], verdict_of) -> str:
    result = campaign_verdict(runs, verdict_of)
    varied = _varied([r.config for r in runs])
    lines = [f"### {_inline(name)}", "", f"**{_inline(result.headline)}**", ""]
    lines += [f"- {_inline(line)}" for line in result.details] + [""]
    headers = ["#", "Run ID", *[f"`{_inline(k)}`" for k in varied], "State", "Tuned step", "Domain WER",
               "Heldout Δ pts", "Verdict", "Stopped because"]
    rows, points, best = [], [], math.inf
    for n, run in enumerate(runs, 1):
        v = verdict_of(run)
        sel = v.selection
        tuned = sel.interval if sel is not None else None
        flat = _flat(run.config or {})
        verdict = v.overall if run.status == RunStatus.COMPLETED else MISSING
        rows.append([str(n), run.id, *[_fmt(flat.get(k)) for k in varied], run.status,
                     MISSING if tuned is None else str(tuned.step) + ("" if sel.within_guard else " (outside guard)"),
                     _pct(tuned.domain_wer if tuned else None),
                     MISSING if sel is None or sel.regression is None else f"{sel.regression:+.2f}",
                     verdict, _stopped(run)])
        if tuned is not None and tuned.domain_wer is not None:
            if sel.within_guard:  # the best so far as the study compares trials: on the dev set if there is one
                best = min(best, 100 * _picking_wer(tuned))
            points.append((n, 100 * _picking_wer(tuned), best))
    lines.append(_table(headers, rows))
    if len(points) >= 2:
        lines += ["", _chart(name, points)]
    return "\n".join(lines)


def _picking_wer(interval) -> float:
    """The WER trials are compared on (as tuning/worker.py reports them to the study): the dev set's
    when the run has one, so the domain set that reports the verdict chooses neither the
    checkpoint nor the trial; else the domain set's."""
    return interval.select_wer if interval.select_wer is not None else interval.domain_wer


def _chart(name: str, points: list[tuple[int, float, float]]) -> str:
    """Mermaid xychart-beta: trials in order on x; bars: the tuned interval's picking WER % (dev set
    if the runs have one, else domain); line: the best feasible (inside the guard) so far."""
    values = [p[1] for p in points] + [p[2] for p in points if math.isfinite(p[2])]
    low, high = max(0, math.floor(min(values)) - 1), math.ceil(max(values)) + 1
    best = [p[2] if math.isfinite(p[2]) else p[1] for p in points]
    safe = "".join(c for c in name if c.isalnum() or c in "-_.: ")
    return "\n".join([
        "```mermaid", "xychart-beta",
        f'    title "{safe}: tuned WER % by trial, dev set if any (bars), best feasible so far (line)"',
        f"    x-axis \"trial\" [{', '.join(str(p[0]) for p in points)}]",
        f'    y-axis "WER %" {low} --> {high}',
        f"    bar [{', '.join(f'{p[1]:.2f}' for p in points)}]",
        f"    line [{', '.join(f'{b:.2f}' for b in best)}]",
        "```"])


def _varied(configs: Sequence[Mapping]) -> list[str]:
    """Config keys whose value differs between a campaign's runs (what the search varied)."""
    flats = [_flat(c or {}) for c in configs]
    keys = sorted({k for f in flats for k in f})
    skip = ("registry.", "output_dir", "device", "rerun", "experiment")
    return [k for k in keys if not k.startswith(skip) and len({repr(f.get(k)) for f in flats}) > 1][:6]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_inline(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _fmt(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _pct(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{100 * fraction:.2f}%"

