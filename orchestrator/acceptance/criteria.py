"""The seven acceptance criteria, one function each: what was measured -> a Verdict.

Thresholds are in absolute WER percentage points (WER 0.1234 = 12.34 points); registry WERs
are fractions. The intervals criteria 1, 2 and 4 read come from acceptance/compare.py.

  1 domain_reduction    baseline (step 0) - tuned domain WER >= min_domain_reduction
  2 heldout_regression  tuned - baseline heldout WER <= max_heldout_regression
  3 convergence         least-squares slope of eval loss over step < 0 and last < first
  4 stability           max - min domain WER over the last `stability_window` trained intervals
                        <= max_stability_range (judged on the range's bootstrap interval)
  5 identity_errors     target resolution recorded no nn.Identity target (target_report)
  6 artifact_integrity  lora_adapter_best is the selected best step and the sha256 of its
                        adapter_model.safetensors on disk is the registry's
  7 parity              a "parity" check passed (`orchestrator eval` reproduced the WERs)

Criteria 1, 2 and 4: PASS when the whole interval is on the right side of the threshold, FAIL
when it is entirely on the wrong side, INCONCLUSIVE otherwise. A point estimate without an
interval is at best INCONCLUSIVE for criteria 1 and 2, except on an external (`record`ed) run,
which is judged on what it reported and says so. A non-finite WER at a trained step fails the
criterion that reads it: it is never a candidate.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.acceptance.bootstrap import POINTS, loss_trend
from orchestrator.acceptance.compare import finite, trained, wer_of
from orchestrator.acceptance.outcome import (BEST_ADAPTER, FAIL, INCONCLUSIVE, NA, PARITY, PASS, Comparison,
                                             RangeBound, Verdict)
from orchestrator.artifacts.atomic import sha256_file
from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS
from orchestrator.config.criteria import CriteriaConf
from orchestrator.selection import EPS, Columns, Selection

if TYPE_CHECKING:
    from orchestrator.registry.entities import Artifact, Run


def _pts(value: float, signed: bool = False) -> str:
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _interval_text(low: float, high: float, conf: CriteriaConf) -> str:
    return f"{conf.confidence_text} CI [{_pts(low, True)}, {_pts(high, True)}]"


def _guard_note(selection: Selection | None, conf: CriteriaConf) -> str:
    if selection is None or selection.within_guard:
        return ""
    return (f"; no trained interval kept heldout within {conf.max_heldout_regression:g} pts, "
            f"so tuned = lowest domain WER (step {selection.interval.step})")


def not_finite(run: Run, split: str, cols: Columns) -> list[int]:
    """Trained steps whose `split` WER is recorded but not a finite number (NaN, inf). `cols`:
    the run's Columns, whose one sum per split says whether there is any to look for."""
    if cols.finite_domain if split == "domain" else cols.finite_heldout:
        return []
    return [i.step for i in trained(run) if wer_of(i, split) is not None and not finite(wer_of(i, split))]


def _three_way(low: float, high: float, thr: float, *, upper: bool) -> tuple[str, str]:
    """PASS/FAIL/INCONCLUSIVE for an interval [low, high] that must lie at or above `thr`
    (upper=False) or at or below it (upper=True)."""
    if upper:
        if high <= thr + EPS:
            return PASS, f"the whole interval is ≤ {thr:g}"
        if low > thr + EPS:
            return FAIL, f"the whole interval is above {thr:g}"
    else:
        if low >= thr - EPS:
            return PASS, f"the whole interval is ≥ {thr:g}"
        if high < thr - EPS:
            return FAIL, f"the whole interval is below {thr:g}"
    return INCONCLUSIVE, f"the interval straddles {thr:g}"


def _point_status(ok: bool, run: Run) -> tuple[str, str]:
    """A point estimate without an interval: FAIL when it fails; a pass is only INCONCLUSIVE,
    unless the run is external (it reported no more than this)."""
    if not ok:
        return FAIL, ""
    if run.external:
        return PASS, " (external run: judged on the WERs it reported)"
    return INCONCLUSIVE, " (no interval, so at best INCONCLUSIVE)"


def _unjudged(name: str, run: Run, c: Comparison, selection: Selection | None, threshold: str, missing: str,
              cols: Columns, note: str = "") -> Verdict | None:
    """Criterion 1 or 2 before any interval: FAIL on a WER that is not a number (in the split it
    reads), N/A without a comparison; None when there is something to judge."""
    bad = not_finite(run, c.split, cols)
    if bad:
        return Verdict(name, FAIL, "—", f"{c.split} WER is not a number at step(s) {', '.join(map(str, bad))}",
                       threshold)
    if c.delta is None:
        return Verdict(name, NA, "—", ("no trained interval yet" if selection is None else missing) + note, threshold)
    return None


def domain_reduction(run: Run, c: Comparison, selection: Selection | None, conf: CriteriaConf,
                     cols: Columns) -> Verdict:
    thr = conf.min_domain_reduction
    threshold = f"≥ {thr:g} pts"
    unjudged = _unjudged("domain_reduction", run, c, selection, threshold, "no baseline (step 0) domain WER", cols)
    if unjudged is not None:
        return unjudged
    reduction = -c.delta
    if not c.paired:
        status, why = _point_status(reduction >= thr - EPS, run)
        return Verdict("domain_reduction", status, f"{_pts(reduction, True)} pts",
                       c.note + why + _guard_note(selection, conf), threshold)
    low, high = -c.ci_high, -c.ci_low  # reduction's interval
    value = f"{_pts(reduction, True)} pts ({_interval_text(low, high, conf)}; P(improvement) {c.p_improvement:.3f})"
    status, why = _three_way(low, high, thr, upper=False)
    return Verdict("domain_reduction", status, value, f"{why}; {c.method}" + _guard_note(selection, conf),
                   threshold)


def heldout_regression(run: Run, c: Comparison, selection: Selection | None, conf: CriteriaConf,
                       cols: Columns) -> Verdict:
    thr = conf.max_heldout_regression
    threshold = f"≤ {thr:g} pts"
    unjudged = _unjudged("heldout_regression", run, c, selection, threshold, "no baseline or tuned heldout WER",
                         cols, _guard_note(selection, conf))
    if unjudged is not None:
        return unjudged
    if not c.paired:
        status, why = _point_status(c.delta <= thr + EPS, run)
        return Verdict("heldout_regression", status, f"{_pts(c.delta, True)} pts",
                       c.note + why + _guard_note(selection, conf), threshold)
    value = f"{_pts(c.delta, True)} pts ({_interval_text(c.ci_low, c.ci_high, conf)}; P(improvement) {c.p_improvement:.3f})"
    status, why = _three_way(c.ci_low, c.ci_high, thr, upper=True)
    return Verdict("heldout_regression", status, value, f"{why}; {c.method}" + _guard_note(selection, conf),
                   threshold)


def convergence(cols: Columns) -> Verdict:
    threshold = "negative slope, last below first"
    steps, losses = cols.steps, cols.eval_loss
    if not cols.full_eval_loss:  # only the intervals with an eval loss
        steps = [step for step, loss in zip(steps, losses) if loss is not None]
        losses = [loss for loss in losses if loss is not None]
    if len(losses) < 2:
        return Verdict("convergence", NA, "—", f"{len(losses)} eval loss(es) recorded, needs 2", threshold)
    trend = loss_trend(steps, losses)
    value = f"slope {trend.slope:.3g}/step, {trend.first:.4f} → {trend.last:.4f}"
    ok = trend.slope < 0 and trend.last < trend.first
    why = f"least-squares fit over {len(losses)} intervals"
    if not ok:
        why += "; " + " and ".join(
            part for part, bad in (("slope is not negative", trend.slope >= 0),
                                   ("last loss is not below the first", trend.last >= trend.first)) if bad)
    return Verdict("convergence", PASS if ok else FAIL, value, why, threshold)


def stability_window(run: Run, conf: CriteriaConf, cols: Columns) -> list:
    """The last `stability_window` trained intervals that recorded a domain WER (step 0 is no
    part of it; a NaN WER is recorded, and fails the criterion)."""
    n = conf.stability_window
    if cols.full_domain and 0 < n <= len(cols.steps) and min(cols.steps[-n:]) > 0:
        return list(run.intervals[-n:])  # the usual case, read off the columns: the last n intervals qualify
    window = []
    for interval in reversed(run.intervals):  # from the end: the report asks this of 10,000 runs
        if len(window) == conf.stability_window:
            break
        if interval.step > 0 and interval.domain_wer is not None:
            window.append(interval)
    return window[::-1]


def stability(bound: RangeBound | None, conf: CriteriaConf, window: list, cols: Columns) -> Verdict:
    """`window`: `stability_window(run, conf, cols)`."""
    n = conf.stability_window
    thr = conf.max_stability_range
    threshold = f"range ≤ {thr:g} pts over the last {n} trained intervals"
    if len(window) < n:
        return Verdict("stability", NA, "—", f"{len(window)} trained interval(s) with a domain WER, needs {n}",
                       threshold)
    steps = "steps " + ", ".join([str(i.step) for i in window])
    bad = [] if cols.finite_domain else [i.step for i in window if not finite(i.domain_wer)]
    if bad:
        return Verdict("stability", FAIL, "—", f"{steps}: domain WER is not a number at step(s) "
                       f"{', '.join(map(str, bad))}", threshold)
    if bound is None:  # no per-utterance data: the observed range, as it is
        wers = [POINTS * i.domain_wer for i in window]
        spread = max(wers) - min(wers)
        ok = spread <= thr + EPS
        return Verdict("stability", PASS if ok else FAIL, f"{_pts(spread)} pts",
                       f"{steps}; point estimate, no per-utterance data", threshold)
    status, why = _three_way(bound.low, bound.high, thr, upper=True)
    value = f"{_pts(bound.observed)} pts ({conf.confidence_text} CI [{_pts(bound.low)}, {_pts(bound.high)}])"
    return Verdict("stability", status, value, f"{why}; {steps}; {bound.note}", threshold)


_NO_TARGET_REPORT = Verdict("identity_errors", NA, "—", "no target resolution recorded with the run", "0")


def identity_errors(run: Run) -> Verdict:
    threshold = "0"
    count = (run.target_report or {}).get("identity_errors")
    if count is None:
        return _NO_TARGET_REPORT  # one for every run without a target report (a Verdict is immutable)
    skipped = [s.get("name", "?") for s in (run.target_report or {}).get("skipped", [])
               if isinstance(s, dict) and s.get("type") == "Identity"]
    detail = "no nn.Identity target" if not count else "Identity targets: " + ", ".join(skipped[:5])
    return Verdict("identity_errors", PASS if count == 0 else FAIL, str(count), detail, threshold)


def artifact_integrity(run: Run, selection: Selection | None, root: Path | None, artifact: Artifact | None) -> Verdict:
    """`artifact`: the run's BEST_ADAPTER (`run.artifact(BEST_ADAPTER)`, which parity reads too)."""
    threshold = "best step, sha256 matches"
    if run.external:
        return Verdict("artifact_integrity", NA, "—", "external run: no artifacts", threshold)
    if artifact is None:
        return Verdict("artifact_integrity", FAIL, "—", f"no {BEST_ADAPTER} recorded", threshold)
    value = f"step {artifact.step}, sha256 {artifact.sha256[:12]}"
    if selection is None:
        return Verdict("artifact_integrity", FAIL, value, "no trained interval selected as best", threshold)
    if artifact.step != selection.interval.step:
        return Verdict("artifact_integrity", FAIL, value,
                       f"{BEST_ADAPTER} is from step {artifact.step}, the selected best is step "
                       f"{selection.interval.step}", threshold)
    path = Path(artifact.path) / ADAPTER_WEIGHTS
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    if not path.is_file():
        return Verdict("artifact_integrity", FAIL, value, f"adapter file missing: {path}", threshold)
    digest = sha256_file(path)
    if digest != artifact.sha256:
        return Verdict("artifact_integrity", FAIL, value,
                       f"sha256 on disk {digest[:12]} differs from the registry's record", threshold)
    return Verdict("artifact_integrity", PASS, value, f"{path} matches", threshold)


def parity(run: Run, selection: Selection | None, best: Artifact | None) -> Verdict:
    """`best`: the run's BEST_ADAPTER (`run.artifact(BEST_ADAPTER)`), if it recorded one."""
    threshold = "check passed"
    if run.external:
        return Verdict("parity", NA, "—", "external run: nothing to re-evaluate", threshold)
    check = run.check(PARITY)
    if check is None:
        return Verdict("parity", FAIL, "not run", "parity not run (orchestrator eval on the best adapter)",
                       threshold)
    value = _describe(check.details) or ("passed" if check.passed else "failed")
    step = check.details.get("step")
    if selection is not None and step is not None and step != selection.interval.step:
        return Verdict("parity", FAIL, value,
                       f"checked the adapter of step {step}, the selected best is step "
                       f"{selection.interval.step}", threshold)
    sha = check.details.get("sha256")
    if best is not None and sha is not None and sha != best.sha256:
        return Verdict("parity", FAIL, value, "checked another adapter than the recorded best (sha256)",
                       threshold)
    return Verdict("parity", PASS if check.passed else FAIL, value,
                   "reproduced the registry's WERs" if check.passed else "did not reproduce the registry's WERs",
                   threshold)


def _describe(details: dict[str, Any], limit: int = 160) -> str:
    parts = []
    for key, value in details.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif not isinstance(value, (int, str, bool)) or key == "sha256":
            continue
        parts.append(f"{key}={value}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
