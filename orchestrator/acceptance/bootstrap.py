"""Paired bootstrap of a corpus-WER difference (Bisani & Ney, 2004) and the eval-loss trend.

numpy only, imported when first needed: a report of runs without per-utterance data fits loss
trends but bootstraps nothing, and starts faster without it. Every WER difference here is in
absolute percentage points: a corpus WER of 0.1234 is 12.34 points, so a delta of -0.5 means the
tuned system makes 0.5 points fewer errors.
"""
from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

POINTS = 100.0  # fraction -> percentage points
CHUNK_CELLS = 1 << 21  # resampled indices per chunk: ~16 MiB of int64, ~100 MiB of temporaries


class Bootstrap(NamedTuple):
    """tuned WER - baseline WER (points): observed `delta`, its percentile interval, and the
    fraction of replicates in which the tuned system's corpus WER is lower (ties count half)."""

    delta: float
    ci_low: float
    ci_high: float
    p_improvement: float
    replicates: int
    confidence: float


class LossTrend(NamedTuple):
    slope: float  # least-squares slope of loss over step (loss units per step)
    first: float
    last: float


def corpus_wer(errors: Sequence[int] | np.ndarray, words: Sequence[int] | np.ndarray) -> float:
    """sum(errors) / sum(reference words), as a fraction."""
    import numpy as np

    total = int(np.sum(words))
    if total <= 0:
        raise ValueError("corpus WER needs at least one reference word")
    return float(np.sum(errors)) / total


def paired_bootstrap(
    base_err: Sequence[int] | np.ndarray,
    base_words: Sequence[int] | np.ndarray,
    tuned_err: Sequence[int] | np.ndarray,
    tuned_words: Sequence[int] | np.ndarray,
    *,
    replicates: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    clusters: Sequence[int] | np.ndarray | None = None,
) -> Bootstrap:
    """Resample utterances with replacement (the same indices for both systems; whole clusters,
    e.g. speakers, when `clusters` is given), take each system's corpus WER = sum(errors) /
    sum(words) per replicate, and summarise delta = tuned - baseline in points: percentile
    interval at `confidence`, P(tuned < baseline) with ties counted half.

    Valid for ONE comparison fixed in advance (see `contrasts` for a picked one). Deterministic
    for a given seed and input size; vectorised (replicate_wers)."""
    import numpy as np

    arrays = [np.asarray(a, dtype=np.float64) for a in (base_err, base_words, tuned_err, tuned_words)]
    n = arrays[0].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in arrays):
        raise ValueError("paired bootstrap needs four 1-D arrays of the same length (one entry per utterance)")
    if n == 0:
        raise ValueError("paired bootstrap needs at least one utterance")
    if not np.array_equal(arrays[1], arrays[3]):
        raise ValueError("paired bootstrap needs the same reference words for both systems")
    reps = replicate_wers([arrays[0], arrays[2]], arrays[1], replicates=replicates, seed=seed, clusters=clusters)
    (c,) = contrasts(reps, [(1, 0)], confidence=confidence)
    return Bootstrap(delta=c.delta, ci_low=c.low, ci_high=c.high, p_improvement=c.p_improvement,
                     replicates=int(reps.boot.shape[0]), confidence=float(confidence))


class Contrast(NamedTuple):
    """One difference `wer[a] - wer[b]` (points) out of `contrasts`: observed, its bounds, and the
    share of replicates in which it is below zero (ties count half)."""

    delta: float
    low: float
    high: float
    p_improvement: float
    se: float


class Replicates(NamedTuple):
    """Corpus WERs (fractions) of several systems scored on one manifest: `observed` (S,) and
    `boot` (R, S), every replicate resampling the SAME utterances (or speakers) for all systems."""

    observed: np.ndarray
    boot: np.ndarray


def replicate_wers(errors: Sequence[Sequence[int]] | np.ndarray, words: Sequence[int] | np.ndarray, *,
                   replicates: int = 10_000, seed: int = 0,
                   clusters: Sequence[int] | np.ndarray | None = None) -> Replicates:
    """Each system's (row of `errors`) corpus WER, observed and in `replicates` bootstrap
    resamples of the utterances with replacement, the same resample for every system.

    `clusters` (one integer per utterance, e.g. its speaker): resample whole clusters instead
    (a block bootstrap: utterances of one speaker are not independent). A replicate is a weight
    per utterance (how often it was drawn), so sums are one matrix product; drawn in chunks of
    at most CHUNK_CELLS draws. Deterministic per seed and input size."""
    import numpy as np

    err = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    w = np.asarray(words, dtype=np.float64)
    n = w.shape[0]
    if w.ndim != 1 or err.shape[1] != n:
        raise ValueError("the bootstrap needs arrays of the same length (one entry per utterance)")
    if n == 0:
        raise ValueError("the bootstrap needs at least one utterance")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if w.sum() <= 0:
        raise ValueError("corpus WER needs at least one reference word")
    if clusters is None:
        groups, members = n, None
    else:
        _, members = np.unique(np.asarray(clusters), return_inverse=True)
        if members.shape[0] != n:
            raise ValueError("clusters needs one entry per utterance")
        groups = int(members.max()) + 1
    table = np.vstack([err, w])  # (S + 1, n): the words ride along as one more row
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_CELLS // max(groups, n))
    sums = np.empty((replicates, table.shape[0]), dtype=np.float64)
    for start in range(0, replicates, per_chunk):
        stop = min(start + per_chunk, replicates)
        idx = rng.integers(0, groups, size=(stop - start, groups))
        offsets = (np.arange(stop - start) * groups)[:, None]
        counts = np.bincount((idx + offsets).ravel(), minlength=(stop - start) * groups).reshape(-1, groups)
        counts = counts.astype(np.float64)  # a float matrix product runs on BLAS; int64 @ float64 does not
        weights = counts if members is None else counts[:, members]
        sums[start:stop] = weights @ table.T
    with np.errstate(invalid="ignore", divide="ignore"):  # a replicate of empty references -> nan
        boot = sums[:, :-1] / sums[:, -1:]
    boot = boot[np.isfinite(boot).all(axis=1)]
    if boot.shape[0] == 0:
        raise ValueError("every bootstrap replicate drew utterances without reference words")
    return Replicates(err.sum(axis=1) / w.sum(), boot)


def contrasts(reps: Replicates, pairs: Sequence[tuple[int, int]], *, confidence: float = 0.95,
              simultaneous: bool = False) -> list[Contrast]:
    """`wer[a] - wer[b]` in points for each (a, b) in `pairs`, with bounds at `confidence`.

    simultaneous=False: each pair's percentile interval (valid for ONE pair chosen in advance).
    simultaneous=True: a max-type band (studentised, one quantile per side): every pair's true
    difference lies within its bounds at once with probability `confidence` (each side
    (1 - confidence) / 2), so the bounds of whichever pair the data made us pick stay valid.
    Picking the best pair and re-bootstrapping it alone is not valid: it doubles the optimism."""
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    a, b = (np.array([p[i] for p in pairs], dtype=int) for i in (0, 1))
    observed = POINTS * (reps.observed[a] - reps.observed[b])
    deltas = POINTS * (reps.boot[:, a] - reps.boot[:, b])  # (R, pairs)
    p_improvement = (deltas < 0).mean(axis=0) + 0.5 * (deltas == 0).mean(axis=0)
    se = deltas.std(axis=0)
    tail = (1 - confidence) / 2
    if simultaneous:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(se > 0, (deltas - observed) / np.where(se > 0, se, 1), 0.0)
        up, down = np.quantile(z.max(axis=1), 1 - tail), np.quantile((-z).max(axis=1), 1 - tail)
        low, high = observed - up * se, observed + down * se
    else:
        low, high = np.quantile(deltas, [tail, 1 - tail], axis=0)
    return [Contrast(*map(float, values)) for values in zip(observed, low, high, p_improvement, se)]


def loss_trend(steps: Sequence[float], losses: Sequence[float]) -> LossTrend:
    """Slope of the least-squares line through (step, loss), and the first and last loss
    (in step order). Needs at least two points at distinct steps.

    The closed form, sum((x - mean x) * (y - mean y)) / sum((x - mean x)^2), in plain Python: the
    report fits one line per run (10,000 of them), each of a few dozen points, where numpy's
    polyfit costs a hundred microseconds a call. Equal to polyfit's slope to rounding. What it
    needs of the steps alone is computed once per distinct sequence of steps (`_step_side`):
    the runs of a registry share a few evaluation schedules."""
    x, y = tuple(steps), list(losses)
    if len(x) != len(y):
        raise ValueError("loss_trend needs two 1-D sequences of the same length")
    side = _step_side(x)
    if side is None:
        raise ValueError("loss_trend needs losses at two or more distinct steps")
    dx, sum_dx2, first, last = side
    mean_y = sum(y) / len(y)
    slope = sum(map(operator.mul, dx, map(operator.sub, y, repeat(mean_y)))) / sum_dx2
    return LossTrend(float(slope), float(y[first]), float(y[last]))


@functools.lru_cache(maxsize=256)
def _step_side(x: tuple[float, ...]) -> tuple[tuple[float, ...], float, int, int] | None:
    """The steps' part of loss_trend's fit: each step's deviation from their mean, the sum of
    their squares, and where the first loss (at the lowest step) and the last (at the highest)
    are, a stable sort's ends; None for fewer than two distinct steps."""
    low, high = min(x, default=0), max(x, default=0)
    if low == high:
        return None
    mean_x = sum(x) / len(x)
    dx = tuple(map(operator.sub, x, repeat(mean_x)))  # a - mean_x for each a, without a Python loop
    return dx, sum(map(operator.mul, dx, dx)), x.index(low), len(x) - 1 - x[::-1].index(high)
