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
    fraction of replicates in which the tuned system's corpus WER is lower."""

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
) -> Bootstrap:
    """Resample utterances with replacement (the same indices for both systems), take each
    system's corpus WER = sum(errors) / sum(words) per replicate, and summarise
    delta = tuned - baseline in points: percentile interval at `confidence`, P(tuned < baseline).

    Deterministic for a given seed and input size. Vectorised: replicates are drawn in chunks
    of at most CHUNK_CELLS resampled indices, never one Python iteration per replicate.
    """
    import numpy as np

    arrays = [np.asarray(a, dtype=np.float64) for a in (base_err, base_words, tuned_err, tuned_words)]
    n = arrays[0].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in arrays):
        raise ValueError("paired bootstrap needs four 1-D arrays of the same length (one entry per utterance)")
    if n == 0:
        raise ValueError("paired bootstrap needs at least one utterance")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    b_err, b_words, t_err, t_words = arrays
    delta = POINTS * (corpus_wer(t_err, t_words) - corpus_wer(b_err, b_words))

    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_CELLS // n)
    deltas = np.empty(replicates, dtype=np.float64)
    for start in range(0, replicates, per_chunk):
        stop = min(start + per_chunk, replicates)
        idx = rng.integers(0, n, size=(stop - start, n))
        with np.errstate(invalid="ignore", divide="ignore"):  # a replicate of empty references -> nan
            base = b_err[idx].sum(axis=1) / b_words[idx].sum(axis=1)
            tuned = t_err[idx].sum(axis=1) / t_words[idx].sum(axis=1)
        deltas[start:stop] = POINTS * (tuned - base)

    finite = deltas[np.isfinite(deltas)]
    if finite.size == 0:
        raise ValueError("every bootstrap replicate drew utterances without reference words")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Bootstrap(
        delta=float(delta),
        ci_low=float(low),
        ci_high=float(high),
        p_improvement=float(np.mean(finite < 0)),
        replicates=int(finite.size),
        confidence=float(confidence),
    )


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
