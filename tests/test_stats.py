"""Paired bootstrap (Bisani & Ney) against exact bootstrap distributions, and the loss trend."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from orchestrator.acceptance import bootstrap as stats
from orchestrator.acceptance.bootstrap import loss_trend, paired_bootstrap


def exact_distribution(b_err, words, t_err) -> tuple[np.ndarray, np.ndarray]:
    """Every resample of n utterances (n**n index tuples, equally likely): its delta in points."""
    n = len(words)
    deltas = []
    for idx in itertools.product(range(n), repeat=n):
        idx = list(idx)
        w = sum(words[i] for i in idx)
        deltas.append(100 * (sum(t_err[i] for i in idx) - sum(b_err[i] for i in idx)) / w)
    values, counts = np.unique(np.round(deltas, 9), return_counts=True)
    return values, counts / counts.sum()


def quantile(values: np.ndarray, probs: np.ndarray, q: float) -> float:
    return float(values[np.searchsorted(np.cumsum(probs), q - 1e-12)])


def test_two_utterances_by_hand() -> None:
    # Resamples of (u0, u1): (0,0) base 2/2 tuned 0 -> -100; (0,1), (1,0) -> -50; (1,1) -> 0.
    boot = paired_bootstrap([1, 0], [1, 1], [0, 0], [1, 1], replicates=20_000, seed=3)
    assert boot.delta == pytest.approx(-50.0)
    assert (boot.ci_low, boot.ci_high) == (-100.0, 0.0)
    assert boot.p_improvement == pytest.approx(0.875, abs=4 * np.sqrt(0.25 / 20_000))  # (1,1) ties: half
    assert boot.replicates == 20_000 and boot.confidence == 0.95


@pytest.mark.parametrize("chunk", [stats.CHUNK_CELLS, 7])  # one chunk, and many uneven ones
def test_matches_the_exact_bootstrap_distribution(monkeypatch, chunk: int) -> None:
    monkeypatch.setattr(stats, "CHUNK_CELLS", chunk)
    b_err, words, t_err = [2, 1, 3, 0, 1], [5, 4, 6, 5, 3], [1, 1, 1, 0, 2]
    values, probs = exact_distribution(b_err, words, t_err)
    replicates = 20_000
    boot = paired_bootstrap(b_err, words, t_err, words, replicates=replicates, seed=11)

    assert boot.delta == pytest.approx(100 * (5 - 7) / 23)
    p_exact = float(probs[values < 0].sum() + 0.5 * probs[values == 0].sum())  # ties count half
    assert boot.p_improvement == pytest.approx(p_exact, abs=4 * np.sqrt(p_exact * (1 - p_exact) / replicates))
    assert quantile(values, probs, 0.015) <= boot.ci_low <= quantile(values, probs, 0.035)
    assert quantile(values, probs, 0.965) <= boot.ci_high <= quantile(values, probs, 0.985)


def test_deterministic_per_seed() -> None:
    rng = np.random.default_rng(0)
    words = rng.integers(1, 20, 300)
    base = rng.binomial(words, 0.2)
    tuned = rng.binomial(words, 0.19)
    one = paired_bootstrap(base, words, tuned, words, replicates=2_000, seed=5)
    assert paired_bootstrap(base, words, tuned, words, replicates=2_000, seed=5) == one
    assert paired_bootstrap(base, words, tuned, words, replicates=2_000, seed=6) != one


def test_clearly_better_system_excludes_zero_and_is_fast() -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(3, 25, 500)
    base = rng.binomial(words, 0.15)
    tuned = np.maximum(base - rng.binomial(1, 0.6, 500), 0)  # one error fewer on most utterances
    start = time.perf_counter()
    boot = paired_bootstrap(base, words, tuned, words)  # 10,000 replicates by default
    assert time.perf_counter() - start < 5
    assert boot.ci_low < boot.delta < boot.ci_high < 0
    assert boot.p_improvement > 0.99 and boot.replicates == 10_000


def test_identical_systems_have_a_zero_interval() -> None:
    boot = paired_bootstrap([1, 2, 0], [3, 4, 5], [1, 2, 0], [3, 4, 5], replicates=500)
    assert (boot.delta, boot.ci_low, boot.ci_high, boot.p_improvement) == (0.0, 0.0, 0.0, 0.5)  # ties count half


@pytest.mark.parametrize("args,match", [
    (([], [], [], []), "at least one utterance"),
    (([1], [1, 2], [1], [1]), "same length"),
    (([0, 0], [0, 0], [0, 0], [0, 0]), "reference word"),
])
def test_bad_input_is_a_value_error(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(*args, replicates=100)


def test_loss_trend_is_the_least_squares_slope() -> None:
    slope, first, last = loss_trend([4, 0, 2, 6], [1.5, 3.0, 2.0, 1.5])  # any order, sorted by step
    expected = np.polyfit([0, 2, 4, 6], [3.0, 2.0, 1.5, 1.5], 1)[0]
    assert slope == pytest.approx(expected) and slope < 0
    assert (first, last) == (3.0, 1.5)
    with pytest.raises(ValueError, match="two or more"):
        loss_trend([0], [1.0])
