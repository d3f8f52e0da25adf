"""Acceptance criteria -> a verdict per criterion and per run, from registry entities only.

No torch, no hydra: the report imports this. Thresholds are in absolute WER percentage points
(WER 0.1234 = 12.34 points); registry WERs are fractions.

The seven criteria (thresholds in `CriteriaConf`, values in conf/criteria/default.yaml):
  1 domain_reduction    baseline (step 0) - tuned domain WER >= min_domain_reduction
  2 heldout_regression  tuned - baseline heldout WER <= max_heldout_regression
  3 convergence         least-squares slope of eval loss over step < 0 and last < first
  4 stability           max - min domain WER over the last `stability_window` intervals
                        <= max_stability_range
  5 identity_errors     target resolution recorded no nn.Identity target (target_report)
  6 artifact_integrity  lora_adapter_best is the selected best step and the sha256 of its
                        adapter_model.safetensors on disk is the registry's
  7 parity              a "parity" check passed (`orchestrator eval` reproduced the WERs)

"Tuned" is always the interval `select_best` picks. Criteria 1 and 2 use the paired bootstrap
of the stored per-utterance errors: PASS when the whole confidence interval is on the right
side of the threshold, FAIL when it is entirely on the wrong side, INCONCLUSIVE otherwise.
Without per-utterance data (external runs, runs from before they were stored) they are judged
on the point estimate and say so. Criteria 3-7 are PASS or FAIL, or N/A when the run holds no
data for them (e.g. an external run has no eval loss, artifacts or checks).

Overall: FAIL if any criterion fails; else INCONCLUSIVE if any is inconclusive or N/A (a run
is never PASS on criteria nobody could check); PASS only when all seven pass.
"""
from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.acceptance.bootstrap import POINTS, corpus_wer, loss_trend, paired_bootstrap
from orchestrator.artifacts.atomic import sha256_file
from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS, BEST_ADAPTER
from orchestrator.config.criteria import CriteriaConf
from orchestrator.registry.entities import RunStatus
from orchestrator.selection import EPS, Selection, select_best

if TYPE_CHECKING:
    import numpy as np

    from orchestrator.registry.entities import Interval, Run

PASS, FAIL, INCONCLUSIVE, NA = "PASS", "FAIL", "INCONCLUSIVE", "N/A"
PLANNED = "planned"  # matrix status of a declared experiment with no run
SPLITS = ("domain", "heldout")
PARITY = "parity"
NO_UTTERANCES = "point estimate, no per-utterance data"
TITLES = {
    "domain_reduction": "Domain WER reduction",
    "heldout_regression": "Heldout WER regression",
    "convergence": "Convergence (eval loss)",
    "stability": "Stability (domain WER)",
    "identity_errors": "Identity() target errors",
    "artifact_integrity": "Artifact integrity",
    "parity": "CLI parity",
}
DERIVED = {PASS: "passed", FAIL: "failed", INCONCLUSIVE: "inconclusive"}


# --- verdicts ----------------------------------------------------------------------------------

class UtteranceSource(Protocol):
    """Where per-utterance errors come from; `registry.Store` is one."""

    def utterance_errors(self, run_id: str, step: int, split: str) -> tuple[np.ndarray, np.ndarray]: ...


Loader = Callable[[str, int, str], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Baseline (step 0) vs tuned WER on one manifest. WERs are fractions; delta = tuned -
    baseline and its interval are points. `paired` is True when the bootstrap ran; otherwise
    ci_* and p_improvement are None and `note` says why."""

    split: str
    baseline_wer: float | None
    tuned_wer: float | None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_improvement: float | None = None
    paired: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str  # a key of TITLES
    status: str  # PASS | FAIL | INCONCLUSIVE | N/A
    value: str  # what was measured, human-readable
    detail: str  # why this status (or why not assessable)
    threshold: str = ""

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)


@dataclass(frozen=True, slots=True)
class RunVerdict:
    criteria: list[Verdict]
    overall: str  # PASS | FAIL | INCONCLUSIVE
    reason: str  # which criteria decided the overall verdict
    selection: Selection | None
    comparisons: dict[str, Comparison]
    thresholds: CriteriaConf

    def __getitem__(self, name: str) -> Verdict:
        return next(v for v in self.criteria if v.name == name)


def criteria_for(run: Run, default: CriteriaConf | None = None) -> CriteriaConf:
    """The thresholds a run is judged by: those recorded with it, else `default` (or the seeds')."""
    if run.criteria:
        return CriteriaConf.from_dict(run.criteria, where=f"run {run.id} criteria", strict=False)
    return default or CriteriaConf()


def judge(
    run: Run,
    utterances: UtteranceSource | Loader | None,
    criteria: CriteriaConf | None = None,
    *,
    root: Path | None = None,
    selection: Selection | None = None,
) -> RunVerdict:
    """Every criterion's verdict on `run`, and the overall one.

    `utterances` supplies per-utterance (errors, words) for the bootstrap: a Store, a
    function (run_id, step, split) -> arrays, or None (point estimates only). `criteria`
    defaults to the run's recorded criteria (`criteria_for`). Relative artifact paths are
    resolved against `root` (default: the working directory). `selection` is
    `select_best(run.intervals, criteria.max_heldout_regression)` when the caller has it
    already (the report does); None: computed here.
    """
    conf = criteria or criteria_for(run)
    selection = selection or select_best(run.intervals, conf.max_heldout_regression)
    load = _loader(utterances)
    comparisons = {split: _compare(run, selection, split, load, conf) for split in SPLITS}
    verdicts = [
        _domain_reduction(comparisons["domain"], selection, conf),
        _heldout_regression(comparisons["heldout"], selection, conf),
        _convergence(run),
        _stability(run, conf),
        _identity_errors(run),
        _artifact_integrity(run, selection, root),
        _parity(run, selection),
    ]
    overall, reason = overall_verdict(verdicts)
    return RunVerdict(verdicts, overall, reason, selection, comparisons, conf)


def overall_verdict(verdicts: Iterable[Verdict]) -> tuple[str, str]:
    """(overall, reason): FAIL if any fails; INCONCLUSIVE if any is inconclusive or N/A;
    PASS only if every criterion passes."""
    named: dict[str, list[str]] = {FAIL: [], INCONCLUSIVE: [], NA: []}
    for v in verdicts:
        named.setdefault(v.status, []).append(v.name)
    if named[FAIL]:
        return FAIL, "failed: " + ", ".join(named[FAIL])
    if named[INCONCLUSIVE] or named[NA]:
        parts = []
        if named[INCONCLUSIVE]:
            parts.append("inconclusive: " + ", ".join(named[INCONCLUSIVE]))
        if named[NA]:
            parts.append("not assessable: " + ", ".join(named[NA]))
        return INCONCLUSIVE, "; ".join(parts)
    return PASS, "every criterion passed"


def matrix_status(run: Run, verdict: RunVerdict | None) -> str:
    """The run matrix's Status: a person's annotation if there is one; else the lifecycle
    (`running`, `interrupted`, `failed` for a crashed run); else the verdict (`passed`,
    `failed`, `inconclusive`). Experiments with no run are `planned` (see report.py)."""
    if run.annotation_status:
        return run.annotation_status
    if run.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED):
        return run.status
    if verdict is None:
        return run.status
    return DERIVED[verdict.overall]


# --- the criteria ------------------------------------------------------------------------------

def _loader(source: UtteranceSource | Loader | None) -> Loader | None:
    if source is None:
        return None
    if hasattr(source, "utterance_errors"):
        return source.utterance_errors
    return source


_WER_FIELDS = {split: f"{split}_wer" for split in SPLITS}


def _wer_of(interval: Interval | None, split: str) -> float | None:
    return None if interval is None else getattr(interval, _WER_FIELDS[split])


def _compare(run: Run, selection: Selection | None, split: str, load: Loader | None,
             conf: CriteriaConf) -> Comparison:
    base = _wer_of(run.baseline, split)
    tuned = _wer_of(selection.interval if selection else None, split)
    if base is None or tuned is None:
        return Comparison(split, base, tuned, note="no baseline or tuned WER")
    delta = POINTS * (tuned - base)
    point = Comparison(split, base, tuned, delta, note=NO_UTTERANCES)
    if load is None:
        return point
    import numpy as np  # here, not at the top: judging without per-utterance data needs none

    b_err, b_words = (np.asarray(a) for a in load(run.id, 0, split))
    t_err, t_words = (np.asarray(a) for a in load(run.id, selection.interval.step, split))
    if b_err.size == 0 or t_err.size == 0:
        return point
    if b_words.shape != t_words.shape or not np.array_equal(b_words, t_words):
        return dataclasses.replace(point, note="point estimate: baseline and tuned utterances do not pair")
    if b_words.sum() == 0:
        return dataclasses.replace(point, note="point estimate: no reference words")
    if abs(corpus_wer(b_err, b_words) - base) > EPS or abs(corpus_wer(t_err, t_words) - tuned) > EPS:
        return dataclasses.replace(point, note="point estimate: per-utterance errors disagree with the interval WER")
    boot = paired_bootstrap(b_err, b_words, t_err, t_words, replicates=conf.bootstrap_replicates,
                            seed=conf.bootstrap_seed, confidence=conf.confidence)
    return Comparison(split, base, tuned, boot.delta, boot.ci_low, boot.ci_high, boot.p_improvement,
                      paired=True, note=f"paired bootstrap, {boot.replicates} replicates, n={b_err.size}")


def _pts(value: float, signed: bool = False) -> str:
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _interval_text(low: float, high: float, conf: CriteriaConf) -> str:
    return f"{conf.confidence:.0%} CI [{_pts(low, True)}, {_pts(high, True)}]"


def _guard_note(selection: Selection | None, conf: CriteriaConf) -> str:
    if selection is None or selection.within_guard:
        return ""
    return (f"; no trained interval kept heldout within {conf.max_heldout_regression:g} pts, "
            f"so tuned = lowest domain WER (step {selection.interval.step})")


def _domain_reduction(c: Comparison, selection: Selection | None, conf: CriteriaConf) -> Verdict:
    thr = conf.min_domain_reduction
    threshold = f"≥ {thr:g} pts"
    if c.delta is None:
        why = "no trained interval yet" if selection is None else "no baseline (step 0) domain WER"
        return Verdict("domain_reduction", NA, "—", why, threshold)
    reduction = -c.delta
    if not c.paired:
        status = PASS if reduction >= thr - EPS else FAIL
        return Verdict("domain_reduction", status, f"{_pts(reduction, True)} pts",
                       c.note + _guard_note(selection, conf), threshold)
    low, high = -c.ci_high, -c.ci_low  # reduction's interval
    value = f"{_pts(reduction, True)} pts ({_interval_text(low, high, conf)}; P(improvement) {c.p_improvement:.3f})"
    if low >= thr - EPS:
        status, why = PASS, f"the whole interval is ≥ {thr:g}"
    elif high < thr - EPS:
        status, why = FAIL, f"the whole interval is below {thr:g}"
    else:
        status, why = INCONCLUSIVE, f"the interval straddles {thr:g}"
    return Verdict("domain_reduction", status, value, why + _guard_note(selection, conf), threshold)


def _heldout_regression(c: Comparison, selection: Selection | None, conf: CriteriaConf) -> Verdict:
    thr = conf.max_heldout_regression
    threshold = f"≤ {thr:g} pts"
    if c.delta is None:
        why = "no trained interval yet" if selection is None else "no baseline or tuned heldout WER"
        return Verdict("heldout_regression", NA, "—", why + _guard_note(selection, conf), threshold)
    if not c.paired:
        status = PASS if c.delta <= thr + EPS else FAIL
        return Verdict("heldout_regression", status, f"{_pts(c.delta, True)} pts",
                       c.note + _guard_note(selection, conf), threshold)
    value = f"{_pts(c.delta, True)} pts ({_interval_text(c.ci_low, c.ci_high, conf)}; P(improvement) {c.p_improvement:.3f})"
    if c.ci_high <= thr + EPS:
        status, why = PASS, f"the whole interval is ≤ {thr:g}"
    elif c.ci_low > thr + EPS:
        status, why = FAIL, f"the whole interval is above {thr:g}"
    else:
        status, why = INCONCLUSIVE, f"the interval straddles {thr:g}"
    return Verdict("heldout_regression", status, value, why + _guard_note(selection, conf), threshold)


_STEP, _EVAL_LOSS, _DOMAIN_WER = (operator.attrgetter(name) for name in ("step", "eval_loss", "domain_wer"))


def _convergence(run: Run) -> Verdict:
    threshold = "negative slope, last below first"
    steps, losses = list(map(_STEP, run.intervals)), list(map(_EVAL_LOSS, run.intervals))  # no Python loop
    if None in losses:  # only the intervals with an eval loss
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


def _stability(run: Run, conf: CriteriaConf) -> Verdict:
    n = conf.stability_window
    threshold = f"range ≤ {conf.max_stability_range:g} pts over last {n}"
    last = run.intervals[-n:]  # the last n intervals, when each has a domain WER (as they usually do)
    if len(last) < n or None in map(_DOMAIN_WER, last):
        last = list(itertools.islice((i for i in reversed(run.intervals) if i.domain_wer is not None), n))[::-1]
    if len(last) < n:
        return Verdict("stability", NA, "—", f"{len(last)} interval(s) with a domain WER, needs {n}", threshold)
    wers = [POINTS * i.domain_wer for i in last]
    spread = max(wers) - min(wers)
    ok = spread <= conf.max_stability_range + EPS
    return Verdict("stability", PASS if ok else FAIL, f"{_pts(spread)} pts",
                   "steps " + ", ".join(str(i.step) for i in last), threshold)


def _identity_errors(run: Run) -> Verdict:
    threshold = "0"
    count = (run.target_report or {}).get("identity_errors")
    if count is None:
        return Verdict("identity_errors", NA, "—", "no target resolution recorded with the run", threshold)
    skipped = [s.get("name", "?") for s in (run.target_report or {}).get("skipped", [])
               if isinstance(s, dict) and s.get("type") == "Identity"]
    detail = "no nn.Identity target" if not count else "Identity targets: " + ", ".join(skipped[:5])
    return Verdict("identity_errors", PASS if count == 0 else FAIL, str(count), detail, threshold)


def _artifact_integrity(run: Run, selection: Selection | None, root: Path | None) -> Verdict:
    threshold = "best step, sha256 matches"
    artifact = run.artifact(BEST_ADAPTER)
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


def _parity(run: Run, selection: Selection | None) -> Verdict:
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
    best = run.artifact(BEST_ADAPTER)
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
