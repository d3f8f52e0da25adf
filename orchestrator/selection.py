"""The rule that picks a run's tuned interval: shared by the runner (which saves that interval's
adapter as `lora_adapter_best`) and the judge (which reports it), so neither depends on the other.

Works on registry `Interval` entities (or anything with `step`, `domain_wer`, `heldout_wer`,
`select_wer`); no torch, no numpy. WERs are fractions; the guard is in absolute percentage points.

What picks: the dev set (`eval.select_manifest`, the intervals' `select_wer`) when the run has
one, so the domain set that reports the verdict never chose the checkpoint; else the domain WER
itself, and the judge then widens its interval for having picked (acceptance/compare.py). The
guard always reads heldout. A non-finite WER is never a candidate.
"""
from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

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
    by: str = "domain"  # the WER that picked: "select" (the dev set) or "domain"


def heldout_regression(interval: Interval, baseline: Interval | None) -> float | None:
    """Heldout WER at `interval` minus at the baseline, in points; None if either is missing."""
    if baseline is None or baseline.heldout_wer is None or interval.heldout_wer is None:
        return None
    return POINTS * (interval.heldout_wer - baseline.heldout_wer)


def picks_by(intervals: Sequence[Interval], cols: Columns | None = None) -> str:
    """"select" when a trained interval has a dev-set WER (the run has eval.select_manifest), else
    "domain". `cols`: `columns(intervals)`, if the caller has it."""
    dev = cols.select if cols is not None else list(map(_SELECT_WER, intervals))  # C-speed: 10,000 runs ask
    with_dev = len(dev) - dev.count(None)
    if with_dev and intervals[0].step == 0 and dev[0] is not None:
        with_dev -= 1  # the baseline's does not count: it is no candidate
    return "select" if with_dev else "domain"


_SELECT_WER = operator.attrgetter("select_wer")
_COLUMNS = ("step", "domain_wer", "heldout_wer", "select_wer", "eval_loss")


class Columns(NamedTuple):
    """What the judge reads of a run's intervals, read once: the steps, WERs and eval losses in
    interval order, and what one sum of a column tells. `full_domain`: every interval recorded
    a domain WER (no None); `finite_domain`: every recorded one is finite (False only says
    "look closer": a sum of huge WERs can overflow). Likewise heldout; `full_eval_loss`: every
    interval recorded an eval loss."""

    steps: tuple[int, ...]
    domain: tuple[float | None, ...]
    heldout: tuple[float | None, ...]
    select: tuple[float | None, ...]
    eval_loss: tuple[float | None, ...]
    full_domain: bool
    finite_domain: bool
    full_heldout: bool
    finite_heldout: bool
    full_eval_loss: bool


def columns(intervals: Sequence[Interval]) -> Columns:
    """`intervals` as Columns. Named tuples of one type (registry Intervals) are transposed by
    one C-speed zip, their fields taken by position (read by name, interval by interval, they
    cost several times that); anything else is read by attribute (an eval loss it lacks reads
    None: select_best needs none)."""
    kind = type(intervals[0]) if intervals else None
    at = _positions(kind)
    if at is not None and list(map(type, intervals)).count(kind) == len(intervals):
        every = tuple(zip(*intervals))
        steps, domain, heldout, select, eval_loss = (every[k] for k in at)
    else:
        steps, domain, heldout, select = (tuple(map(operator.attrgetter(name), intervals)) for name in _COLUMNS[:4])
        eval_loss = tuple(getattr(i, "eval_loss", None) for i in intervals)
    return Columns(steps, domain, heldout, select, eval_loss, *_summed(domain), *_summed(heldout),
                   _summed(eval_loss)[0])


@functools.lru_cache(maxsize=16)
def _positions(kind: type) -> tuple[int, ...] | None:
    """Where a named tuple type holds each of _COLUMNS; None for any other type."""
    fields = getattr(kind, "_fields", None)
    if not isinstance(fields, tuple) or not set(_COLUMNS) <= set(fields):
        return None
    return tuple(fields.index(name) for name in _COLUMNS)


def _summed(values: Sequence[float | None]) -> tuple[bool, bool]:
    """(no None among `values`, every value that is not None finite), from one sum: a sum is
    finite iff every term is (or it overflowed, which reads as not finite)."""
    try:
        total, full = sum(values), True
    except TypeError:  # a None: sum what was recorded
        total, full = sum([v for v in values if v is not None]), False
    return full, total - total == 0


def _finite(value: float | None) -> bool:
    return value is not None and value - value == 0  # False for None, NaN and +-inf


def select_best(intervals: Sequence[Interval], max_heldout_regression: float,
                cols: Columns | None = None) -> Selection | None:
    """The lowest WER on the picking set (`picks_by`: the dev set if the run has one, else the
    domain set) among trained intervals (step > 0) whose heldout regression against step 0 is
    within `max_heldout_regression` points; ties go to the earliest step. If none is within the
    guard, the lowest such WER among all trained intervals, flagged. None while there is no
    trained interval with a finite WER (NaN is never picked). `cols`: `columns(intervals)`,
    when the caller has it already (the judge does).

    Works on any prefix of a run's intervals: as intervals arrive, the pick is either the
    previous one or the newest interval, so a trainer saves `lora_adapter_best` exactly when
    `select_best(so_far, guard).interval.step == step`.
    """
    by = picks_by(intervals, cols)
    field = f"{by}_wer"
    key = operator.attrgetter(field, "step")  # ties to the earliest step
    if intervals and intervals[0].step == 0:  # as a run holds them, by step
        baseline = intervals[0]
    else:
        baseline = next((i for i in intervals if i.step == 0), None)
    guarded = []  # the trained intervals within the guard (a NaN WER is never one)
    if baseline is not None and _finite(baseline.heldout_wer):
        limit, base = max_heldout_regression + EPS, baseline.heldout_wer  # as heldout_regression, inlined
        cols = cols or columns(intervals)
        full, finite = cols.full_domain, cols.finite_domain
        if full and finite and by == "domain":  # every domain WER a number: no test each, and one pass
            best = _lowest_within_guard(intervals, cols, base, limit)
            if best is not None:
                return Selection(best, True, heldout_regression(best, baseline), by)
        elif full and finite:
            guarded = [i for i in intervals if i.step > 0 and (h := i.heldout_wer) is not None
                       and POINTS * (h - base) <= limit]  # False for a NaN heldout WER
        else:
            guarded = [i for i in intervals if i.step > 0 and (d := i.domain_wer) is not None and d - d == 0
                       and (h := i.heldout_wer) is not None and POINTS * (h - base) <= limit]
        if by == "select":
            guarded = [i for i in guarded if _finite(i.select_wer)]
    if guarded:
        best = min(guarded, key=key)
        return Selection(best, True, heldout_regression(best, baseline), by)
    trained = [i for i in intervals if i.step > 0 and _finite(getattr(i, field)) and _finite(i.domain_wer)]
    if not trained:  # none within the guard
        return None
    best = min(trained, key=key)
    return Selection(best, False, heldout_regression(best, baseline), by)


def _lowest_within_guard(intervals: Sequence[Interval], cols: Columns, base: float, limit: float) -> Interval | None:
    """The trained interval within the guard with the lowest domain WER, ties to the earliest
    step: `min(guarded, key=(domain_wer, step))` in the pass that finds the guarded ones, over
    the columns (the report's commonest case). Every domain WER must be a finite number."""
    best = low = at = None
    for interval, step, wer, heldout in zip(intervals, cols.steps, cols.domain, cols.heldout):
        if step > 0 and heldout is not None and POINTS * (heldout - base) <= limit:  # False for NaN
            if best is None or wer < low or (wer == low and step < at):  # as (wer, step) < (low, at)
                best, low, at = interval, wer, step
    return best
