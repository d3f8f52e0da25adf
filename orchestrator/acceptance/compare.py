"""A run's per-utterance errors -> the intervals criteria 1, 2 and 4 judge by (numpy, lazily).

Which interval is honest depends on how the tuned checkpoint was picked (selection.py):
- on a dev set (`eval.select_manifest`): the domain set never chose, so the plain paired
  bootstrap of baseline vs tuned is valid for criterion 1 (DEV_SET);
- on the domain set itself: the lowest of K noisy WERs is optimistic, so criterion 1 uses a
  max-type band, simultaneous over every trained interval (`bootstrap.contrasts`), which stays
  valid for whichever one was picked (MAX_TYPE);
- the heldout guard always looks at heldout, so criterion 2 always uses the max-type band.
All resamples share one set of utterance indices (or speakers, when the run recorded them).
Stability (criterion 4) is judged from the same replicates: a simultaneous interval for every
pairwise difference of the window's WERs bounds the true range.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from orchestrator.acceptance.bootstrap import POINTS, Replicates, contrasts, replicate_wers
from orchestrator.acceptance.outcome import (DEV_SET, MAX_TYPE, NO_UTTERANCES, PLAIN, Comparison, Loader,
                                             RangeBound)
from orchestrator.config.criteria import CriteriaConf
from orchestrator.selection import EPS, Selection

if TYPE_CHECKING:
    from orchestrator.registry.entities import Interval, Run

_WER = {"domain": "domain_wer", "heldout": "heldout_wer"}


class Found(NamedTuple):
    """One split's replicates at step 0 and every trained interval (`steps`, in column order)."""

    reps: Replicates
    steps: list[int]
    utterances: int
    speakers: int | None  # resampled by speaker when the run recorded them


def finite(value: float | None) -> bool:
    return value is not None and value - value == 0  # False for None, NaN and +-inf


def wer_of(interval: Interval | None, split: str) -> float | None:
    return None if interval is None else getattr(interval, _WER[split])


def trained(run: Run) -> list[Interval]:
    """The run's trained intervals (step > 0), by step: the candidates of select_best."""
    return [i for i in run.intervals if i.step > 0]


def point(run: Run, selection: Selection | None, split: str) -> Comparison:
    base = wer_of(run.baseline, split)
    tuned = wer_of(selection.interval if selection else None, split)
    if not finite(base) or not finite(tuned):
        return Comparison(split, base, tuned, note="no baseline or tuned WER")
    return Comparison(split, base, tuned, POINTS * (tuned - base), note=NO_UTTERANCES)


def replicates(run: Run, split: str, load: Loader, conf: CriteriaConf) -> Found | str:
    """Bootstrap replicates of `split`'s corpus WER at step 0 and every trained interval (one
    shared resample), with the steps in column order; or why there are none (a note)."""
    import numpy as np

    steps = [0, *(i.step for i in trained(run))]
    wers = [wer_of(run.baseline, split), *(wer_of(i, split) for i in trained(run))]
    arrays = [load(run.id, step, split) for step in steps]
    if any(err.size == 0 for err, _ in arrays):
        missing = [str(step) for step, (err, _) in zip(steps, arrays) if err.size == 0]
        return NO_UTTERANCES if len(missing) == len(steps) else \
            f"point estimate: no per-utterance data at step(s) {', '.join(missing[:5])}"
    words = np.asarray(arrays[0][1])
    if any(w.shape != words.shape or not np.array_equal(w, words) for _, w in arrays):
        return "point estimate: the intervals' utterances do not pair"
    if words.sum() == 0:
        return "point estimate: no reference words"
    errors = np.vstack([np.asarray(err) for err, _ in arrays])
    observed = errors.sum(axis=1) / words.sum()
    if any(not finite(w) or abs(o - w) > EPS for o, w in zip(observed, wers)):
        return "point estimate: per-utterance errors disagree with the interval WER"
    speakers = (run.data_stats or {}).get("speakers", {}).get(split)
    clusters = speakers if speakers is not None and len(speakers) == words.size else None
    reps = replicate_wers(errors, words, replicates=conf.bootstrap_replicates, seed=conf.bootstrap_seed,
                          clusters=clusters)
    return Found(reps, steps, int(words.size), None if clusters is None else len(set(clusters)))


def compare(run: Run, selection: Selection | None, split: str, found: Found | str | None,
            conf: CriteriaConf) -> Comparison:
    """Baseline vs the selected interval on `split`, with the interval its pick allows."""
    c = point(run, selection, split)
    if c.delta is None or found is None:
        return c
    if isinstance(found, str):
        return dataclasses.replace(c, note=found)
    reps, steps = found.reps, found.steps
    column = steps.index(selection.interval.step)
    picked_here = split == "heldout" or selection.by == "domain"  # the guard reads heldout; the pick, its set
    candidates = len(steps) - 1
    if picked_here and candidates > 1:
        pairs, method = [(k, 0) for k in range(1, len(steps))], MAX_TYPE
        bound = contrasts(reps, pairs, confidence=conf.confidence, simultaneous=True)[column - 1]
        how = f"max-type band over {candidates} intervals (picked on this set)"
    else:
        method = PLAIN if picked_here else DEV_SET
        (bound,) = contrasts(reps, [(column, 0)], confidence=conf.confidence)
        how = "paired bootstrap" + (", checkpoint picked on the dev set" if method == DEV_SET else "")
    unit = f"n={found.utterances}" + (f", resampled by speaker ({found.speakers})" if found.speakers else "")
    return Comparison(c.split, c.baseline_wer, c.tuned_wer, bound.delta, bound.low, bound.high,
                      bound.p_improvement, paired=True, method=method, candidates=candidates,
                      note=f"{how}, {reps.boot.shape[0]} replicates, {unit}")


def stability(window: Sequence[Interval], found: Found | str | None, conf: CriteriaConf) -> RangeBound | None:
    """The window's range of domain WERs with a simultaneous interval (None without replicates)."""
    if found is None or isinstance(found, str):
        return None
    reps, steps = found.reps, found.steps
    columns = [steps.index(i.step) for i in window]
    pairs = list(itertools.combinations(columns, 2))
    bounds = contrasts(reps, pairs, confidence=conf.confidence, simultaneous=True)
    observed = POINTS * (max(reps.observed[columns]) - min(reps.observed[columns]))
    low = max(max(0.0, c.low, -c.high) for c in bounds)  # |d| is at least this, for some pair
    high = max(max(abs(c.low), abs(c.high)) for c in bounds)  # and at most this, for every pair
    return RangeBound(observed, low, high, tuple(i.step for i in window),
                      f"simultaneous over {len(pairs)} pairs, {reps.boot.shape[0]} replicates")
