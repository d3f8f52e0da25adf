"""Replication over seeds, and sweeps, judged across runs (numpy, lazily).

A replication group is the runs whose resolved configs are identical but for `optim.seed`
(and where they ran: registry, output_dir, device, rerun), e.g. `python -m orchestrator -m
+exp=... optim.seed=0,1,2`. Its verdict is criterion 1 on a two-level bootstrap: each replicate
resamples the seeds, then the utterances (the same indices for every seed: they all score the
same manifest); each seed contributes its selected interval, with the same allowance for having
picked it as its own verdict (compare.py: max-type without a dev set). `reproducible` needs at
least MIN_SEEDS seeds and a group PASS; "k of n seeds PASS" is shown beside it.

A sweep's best point is a selection too: `sweep_bands` gives each run's reduction with a max-type
band simultaneous over every trained interval of every run of the sweep.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.acceptance.bootstrap import POINTS, Contrast, Replicates, contrasts, replicate_wers
from orchestrator.acceptance.compare import trained
from orchestrator.acceptance.criteria import _three_way
from orchestrator.acceptance.outcome import DEV_SET, INCONCLUSIVE, PASS, Loader, RunVerdict
from orchestrator.config.criteria import CriteriaConf
from orchestrator.registry.entities import RunStatus

if TYPE_CHECKING:
    from orchestrator.registry.entities import Run

MIN_SEEDS = 3  # a group is `reproducible` from this many seeds (and a group PASS)
WHERE_IT_RAN = ("registry", "output_dir", "device", "rerun")


def group_key(run: Run) -> str | None:
    """Identical for runs that differ only in optim.seed (None: no config read, or external)."""
    if run.external or not run.config or "optim" not in run.config:
        return None
    config = {k: v for k, v in run.config.items() if k not in WHERE_IT_RAN}
    config["optim"] = {k: v for k, v in config["optim"].items() if k != "seed"}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def replication_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Groups of two or more completed runs with the same group_key and distinct seeds."""
    seeds: dict[tuple, set] = {}  # cheap first: only runs sharing experiment, lr and steps can group
    for run in runs:
        if run.status == RunStatus.COMPLETED and not run.external and run.config:
            seeds.setdefault((run.experiment, run.lr, run.steps), set()).add(repr(run.config.get("optim", {}).get("seed")))
    groups: dict[str, dict[object, Run]] = {}
    for run in runs:
        if len(seeds.get((run.experiment, run.lr, run.steps), ())) > 1 and run.status == RunStatus.COMPLETED:
            key = group_key(run)
            if key is not None:
                groups.setdefault(key, {}).setdefault(run.config["optim"].get("seed"), run)  # first run of a seed
    return [list(members.values()) for members in groups.values() if len(members) > 1]


@dataclass(frozen=True, slots=True)
class GroupVerdict:
    experiment: str
    run_ids: tuple[str, ...]
    seeds: tuple[object, ...]
    passed: int  # seeds whose own overall verdict is PASS
    status: str  # criterion 1 on the two-level interval: PASS | FAIL | INCONCLUSIVE
    reduction: float | None  # mean over seeds, points
    low: float | None
    high: float | None
    note: str

    @property
    def reproducible(self) -> bool:
        return len(self.seeds) >= MIN_SEEDS and self.status == PASS


def _stack(runs: Sequence[Run], load: Loader, conf: CriteriaConf) -> tuple[Replicates, list[list[int]]] | str:
    """Every run's domain errors at step 0 and each trained interval, in one shared resample:
    the replicates and, per run, its columns (baseline first, then trained intervals by step)."""
    import numpy as np

    rows, columns, words = [], [], None
    for run in runs:
        steps = [0, *(i.step for i in trained(run))]
        arrays = [load(run.id, step, "domain") for step in steps]
        if any(err.size == 0 for err, _ in arrays):
            return f"{run.id}: no per-utterance data at some step"
        for _, w in arrays:
            if words is None:
                words = np.asarray(w)
            elif w.shape != words.shape or not np.array_equal(w, words):
                return "the runs' utterances do not pair (not the same domain manifest)"
        columns.append(list(range(len(rows), len(rows) + len(steps))))
        rows += [np.asarray(err) for err, _ in arrays]
    speakers = (runs[0].data_stats or {}).get("speakers", {}).get("domain")
    clusters = speakers if speakers is not None and len(speakers) == words.size else None
    return replicate_wers(np.vstack(rows), words, replicates=conf.bootstrap_replicates, seed=conf.bootstrap_seed,
                          clusters=clusters), columns


def judge_group(runs: Sequence[Run], verdicts: Mapping[str, RunVerdict], load: Loader | None,
                conf: CriteriaConf) -> GroupVerdict:
    """The group's verdict on criterion 1 from the two-level bootstrap (see the module doc)."""
    import numpy as np

    seeds = tuple(run.config["optim"].get("seed") for run in runs)
    passed = sum(verdicts[run.id].overall == PASS for run in runs)
    picks = [verdicts[run.id].selection for run in runs]
    base = dict(experiment=runs[0].experiment, run_ids=tuple(r.id for r in runs), seeds=seeds, passed=passed)
    if any(p is None for p in picks) or load is None:
        return GroupVerdict(**base, status=INCONCLUSIVE, reduction=None, low=None, high=None,
                            note="no per-utterance data or no tuned interval for every seed")
    stacked = _stack(runs, load, conf)
    if isinstance(stacked, str):
        return GroupVerdict(**base, status=INCONCLUSIVE, reduction=None, low=None, high=None, note=stacked)
    reps, columns = stacked
    hats, los, ups = [], [], []
    for run, pick, cols in zip(runs, picks, columns):
        steps = [0, *(i.step for i in trained(run))]
        chosen = cols[steps.index(pick.interval.step)]
        deltas = POINTS * (reps.boot[:, cols[1:]] - reps.boot[:, [cols[0]]])  # (R, K)
        hat = POINTS * (reps.observed[cols[1:]] - reps.observed[cols[0]])
        k = cols.index(chosen) - 1
        if verdicts[run.id].comparisons["domain"].method == DEV_SET or len(hat) == 1:
            lo = up = deltas[:, k] - hat[k]  # nothing picked on this set: percentile, as its own verdict
        else:  # max-type: the worst studentised deviation over its candidates, at the picked one's scale
            se = deltas.std(axis=0)
            z = np.where(se > 0, (deltas - hat) / np.where(se > 0, se, 1), 0.0)
            lo, up = -se[k] * z.max(axis=1), se[k] * (-z).max(axis=1)
        hats.append(hat[k]), los.append(lo), ups.append(up)
    mean, delta_low, delta_high = pool_seeds(hats, los, ups, confidence=conf.confidence, seed=conf.bootstrap_seed)
    reduction, low, high = -mean, -delta_high, -delta_low
    status, why = _three_way(low, high, conf.min_domain_reduction, upper=False)
    return GroupVerdict(**base, status=status, reduction=reduction, low=low, high=high,
                        note=f"{why}; two-level bootstrap over {len(runs)} seeds and the utterances, "
                             f"{len(los[0])} replicates")


def pool_seeds(hats: Sequence[float], lows: Sequence, highs: Sequence, *, confidence: float,
               seed: int) -> tuple[float, float, float]:
    """The two-level bootstrap of a difference measured at several seeds: (mean over seeds, low,
    high) at `confidence`. `hats[s]` is seed s's observed difference; `lows[s]` / `highs[s]` (R,)
    its deviations from it in each replicate of ONE utterance resample shared by every seed
    (replicate_wers over all of them at once): the same array twice for a percentile interval,
    a max-type band's bounds for a picked interval. Level 1 resamples the seeds (rng seed + 1),
    level 2 is that shared utterance resample; each replicate averages its drawn seeds."""
    import numpy as np

    hats_a, los_a, ups_a = np.asarray(hats, float), np.stack(lows, axis=1), np.stack(highs, axis=1)  # (S,), (R, S)
    rng = np.random.default_rng(seed + 1)
    r, s = los_a.shape
    pick_seeds = rng.integers(0, s, size=(r, s))  # level 1: seeds; level 2: the shared utterance resample
    rows = np.arange(r)[:, None]
    lower = (hats_a[pick_seeds] + los_a[rows, pick_seeds]).mean(axis=1)
    upper = (hats_a[pick_seeds] + ups_a[rows, pick_seeds]).mean(axis=1)
    tail = (1 - confidence) / 2
    return float(hats_a.mean()), float(np.quantile(lower, tail)), float(np.quantile(upper, 1 - tail))


def sweep_bands(runs: Sequence[Run], verdicts: Mapping[str, RunVerdict], load: Loader | None,
                conf: CriteriaConf) -> dict[str, Contrast] | str:
    """Each run's domain change at its tuned step, with a band simultaneous over every trained
    interval of every run (picking the best sweep point is a selection too); or why not."""
    runs = [run for run in runs if verdicts[run.id].selection is not None and trained(run)]
    if load is None or len(runs) < 2:
        return "needs per-utterance data of two or more runs"
    stacked = _stack(runs, load, conf)
    if isinstance(stacked, str):
        return stacked
    reps, columns = stacked
    pairs = [(c, cols[0]) for cols in columns for c in cols[1:]]
    bands = contrasts(reps, pairs, confidence=conf.confidence, simultaneous=True)
    by_pair = dict(zip(pairs, bands))
    out = {}
    for run, cols in zip(runs, columns):
        steps = [0, *(i.step for i in trained(run))]
        out[run.id] = by_pair[(cols[steps.index(verdicts[run.id].selection.interval.step)], cols[0])]
    return out

