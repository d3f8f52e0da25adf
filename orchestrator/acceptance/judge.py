"""A run -> every criterion's verdict and the overall one (no torch, no hydra: the report uses it).

"Tuned" is always the interval `select_best` picks. The intervals of criteria 1, 2 and 4 come
from the stored per-utterance errors (acceptance/compare.py says which kind and why).

Overall: FAIL if any criterion fails; else INCONCLUSIVE if any is inconclusive or N/A (a run
is never PASS on criteria nobody could check); PASS only when all seven pass.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.acceptance import compare, criteria as crit
from orchestrator.acceptance.outcome import (BEST_ADAPTER, DERIVED, FAIL, INCONCLUSIVE, NA, PASS, SPLITS, Loader,
                                             RunVerdict, UtteranceSource, Verdict)
from orchestrator.config.criteria import CriteriaConf
from orchestrator.selection import Selection, columns, select_best
from orchestrator.registry.entities import RunStatus

if TYPE_CHECKING:
    from orchestrator.registry.entities import Run


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
    already; None: picked here.

    The intervals are read once, as Columns (selection.columns), which the pick and every
    criterion share: one pass over them and one finiteness sum per split, not one per criterion.
    """
    conf = criteria or criteria_for(run)
    cols = columns(run.intervals)
    selection = selection or select_best(run.intervals, conf.max_heldout_regression, cols)
    load = _loader(utterances)
    if load is None or selection is None or run.baseline is None:
        found = dict.fromkeys(SPLITS)
    else:
        found = {split: compare.replicates(run, split, load, conf) for split in SPLITS}
    comparisons = {split: compare.compare(run, selection, split, found[split], conf) for split in SPLITS}
    window = crit.stability_window(run, conf, cols)
    bound = (compare.stability(window, found["domain"], conf)  # None without replicates: no need to look
             if isinstance(found["domain"], compare.Found) and len(window) == conf.stability_window
             and all(map(compare.finite, (i.domain_wer for i in window)))
             else None)
    artifact = run.artifact(BEST_ADAPTER)
    verdicts = [
        crit.domain_reduction(run, comparisons["domain"], selection, conf, cols),
        crit.heldout_regression(run, comparisons["heldout"], selection, conf, cols),
        crit.convergence(cols),
        crit.stability(bound, conf, window, cols),
        crit.identity_errors(run),
        crit.artifact_integrity(run, selection, root, artifact),
        crit.parity(run, selection, artifact),
    ]
    overall, reason = overall_verdict(verdicts)
    return RunVerdict(verdicts, overall, reason, selection, comparisons, conf)


def overall_verdict(verdicts: Iterable[Verdict]) -> tuple[str, str]:
    """(overall, reason): FAIL if any fails; INCONCLUSIVE if any is inconclusive or N/A;
    PASS only if every criterion passes."""
    verdicts = list(verdicts)
    statuses = [v.status for v in verdicts]
    if FAIL in statuses:
        return FAIL, "failed: " + ", ".join([v.name for v in verdicts if v.status == FAIL])
    if INCONCLUSIVE in statuses or NA in statuses:
        parts = []
        if INCONCLUSIVE in statuses:
            parts.append("inconclusive: " + ", ".join([v.name for v in verdicts if v.status == INCONCLUSIVE]))
        if NA in statuses:
            parts.append("not assessable: " + ", ".join([v.name for v in verdicts if v.status == NA]))
        return INCONCLUSIVE, "; ".join(parts)
    return PASS, "every criterion passed"


def matrix_status(run: Run, verdict: RunVerdict | None) -> str:
    """The run matrix's Status: a person's annotation if there is one; else the lifecycle
    (`running`, `interrupted`, `failed` for a crashed run); else the verdict (`passed`,
    `failed`, `inconclusive`). Experiments with no run are `planned` (see report/)."""
    if run.annotation_status:
        return run.annotation_status
    if run.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED):
        return run.status
    if verdict is None:
        return run.status
    return DERIVED[verdict.overall]


def _loader(source: UtteranceSource | Loader | None) -> Loader | None:
    if source is None:
        return None
    if hasattr(source, "utterance_errors"):
        return source.utterance_errors
    return source
