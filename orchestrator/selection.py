"""The rule that picks a run's tuned interval: shared by the runner (which saves that interval's
adapter as `lora_adapter_best`) and the judge (which reports it), so neither depends on the other.

Works on registry `Interval` entities (or anything with `step`, `domain_wer`, `heldout_wer`);
no torch, no numpy. WERs are fractions; the guard is in absolute percentage points.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.registry.entities import Interval

POINTS = 100.0  # fraction -> percentage points
EPS = 1e-9  # points: WER arithmetic noise, so 4.92 - 4.72 counts as 0.2


@dataclass(frozen=True, slots=True)
class Selection:
    """The tuned interval: `within_guard` is False when no trained interval kept the heldout
    regression within the guard and the lowest domain WER was taken anyway (or the regression
    could not be measured). `regression` is heldout tuned - baseline in points, if known."""

    interval: Interval
    within_guard: bool
    regression: float | None


def heldout_regression(interval: Interval, baseline: Interval | None) -> float | None:
    """Heldout WER at `interval` minus at the baseline, in points; None if either is missing."""
    if baseline is None or baseline.heldout_wer is None or interval.heldout_wer is None:
        return None
    return POINTS * (interval.heldout_wer - baseline.heldout_wer)


_WER_THEN_STEP = operator.attrgetter("domain_wer", "step")  # select_best's order: ties to the earliest step


def select_best(intervals: Sequence[Interval], max_heldout_regression: float) -> Selection | None:
    """The lowest domain WER among trained intervals (step > 0) whose heldout regression
    against step 0 is within `max_heldout_regression` points; ties go to the earliest step.
    If none is within the guard, the lowest domain WER among all trained intervals, flagged.
    None while there is no trained interval with a domain WER.

    Works on any prefix of a run's intervals: as intervals arrive, the pick is either the
    previous one or the newest interval, so a trainer saves `lora_adapter_best` exactly when
    `select_best(so_far, guard).interval.step == step`.
    """
    if intervals and intervals[0].step == 0:  # as a run holds them, by step
        baseline = intervals[0]
    else:
        baseline = next((i for i in intervals if i.step == 0), None)
    guarded = []  # the trained intervals within the guard, in one pass
    if baseline is not None and baseline.heldout_wer is not None:
        limit, base = max_heldout_regression + EPS, baseline.heldout_wer  # as heldout_regression, inlined
        guarded = [i for i in intervals if i.step > 0 and i.domain_wer is not None and i.heldout_wer is not None
                   and POINTS * (i.heldout_wer - base) <= limit]
    if guarded:
        best = min(guarded, key=_WER_THEN_STEP)
        return Selection(best, True, heldout_regression(best, baseline))
    trained = [i for i in intervals if i.step > 0 and i.domain_wer is not None]  # none within the guard
    if not trained:
        return None
    best = min(trained, key=_WER_THEN_STEP)
    return Selection(best, False, heldout_regression(best, baseline))
