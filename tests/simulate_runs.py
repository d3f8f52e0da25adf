"""Simulated runs for the selection-honesty checks (tests/test_honest_verdicts.py).

A run: N utterances (5-20 reference words, per-utterance difficulty from a Beta), a baseline
and K trained intervals whose per-utterance error rates are the baseline's times a factor that
sets the true reduction, with noise correlated across intervals (AR(1) over steps, per
utterance). Errors are binomial draws. The true domain reduction is exact by construction (in
expectation over the draws, for the run's utterances). Heldout never changes (the guard always
admits every interval), so criterion 1 is what is measured.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from orchestrator.acceptance.verdicts import judge
from orchestrator.config.criteria import CriteriaConf
from orchestrator.registry import Interval, Run

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def simulate(rng: np.random.Generator, *, reduction: float, n: int = 500, k: int = 9, dev: bool = False,
             rho: float = 0.7, sigma: float = 0.25) -> tuple[Run, dict]:
    """One run whose true domain reduction is `reduction` points at every trained interval, and
    its per-utterance errors {(step, split): (errors, words)}. `dev`: also a dev set (same model)."""
    def one_set() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        words = rng.integers(5, 21, n)
        p = rng.beta(2, 8, n)  # mean 0.2: a 20 % WER baseline
        return words, p, rng.binomial(words, p)

    steps = [10 * (j + 1) for j in range(k)]
    sets = {"domain": one_set(), **({"select": one_set()} if dev else {})}
    found, wers = {}, {step: {} for step in [0, *steps]}
    for split, (words, p, base) in sets.items():
        base_wer = (words * p).sum() / words.sum()
        factor = 1 - reduction / (100 * base_wer)  # expected corpus WER drops by `reduction` points
        a = rng.standard_normal(n)
        found[(0, split)] = (base, words)
        wers[0][split] = base.sum() / words.sum()
        for step in steps:  # AR(1) noise over steps: neighbouring checkpoints err alike
            a = rho * a + np.sqrt(1 - rho ** 2) * rng.standard_normal(n)
            q = np.clip(p * factor * np.exp(sigma * a - sigma ** 2 / 2), 0, 1)
            errors = rng.binomial(words, q)
            found[(step, split)] = (errors, words)
            wers[step][split] = errors.sum() / words.sum()
    intervals = tuple(Interval(step, None, None, None, wers[step]["domain"], 0.10, n, n,
                               wers[step].get("select"), n if dev else None, NOW) for step in [0, *steps])
    run = Run(id="sim", experiment="sim", status="completed", config={}, config_hash="h", model_id="m",
              targets=[], target_summary="", lr=1e-4, steps=steps[-1], dora=False, git_commit=None, data_stats={},
              started_at=NOW, ended_at=NOW, failure_reason=None, intervals=intervals)
    return run, found


def pass_rates(seed: int, runs: int, reduction: float, *, replicates: int = 1000, dev: bool = False,
               **kw) -> dict[str, float]:
    """How often criterion 1 PASSes over `runs` simulated runs: through the judge (`honest`), and
    with the naive plain bootstrap at the picked interval (`naive`, the bug), on the same data."""
    from orchestrator.acceptance import compare
    from orchestrator.acceptance.bootstrap import contrasts

    conf = CriteriaConf(bootstrap_replicates=replicates)
    rng = np.random.default_rng(seed)
    honest = naive = 0
    for _ in range(runs):
        run, found = simulate(rng, reduction=reduction, dev=dev, **kw)
        empty = (np.zeros(0, dtype=np.int64),) * 2

        def load(run_id: str, step: int, split: str):
            return found.get((step, split), empty)

        verdict = judge(run, load, conf)
        honest += verdict["domain_reduction"].status == "PASS"
        reps = compare.replicates(run, "domain", load, conf)
        column = reps.steps.index(verdict.selection.interval.step)
        (plain,) = contrasts(reps.reps, [(column, 0)], confidence=conf.confidence)
        naive += -plain.high >= conf.min_domain_reduction
    return {"honest": honest / runs, "naive": naive / runs}
