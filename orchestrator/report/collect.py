"""Judge every run of a report once: ReportData (runs, verdicts, replication groups, planned
experiments) and `collect`, which reads per-utterance errors up front in a few queries."""
from __future__ import annotations

import marshal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.acceptance.groups import GroupVerdict, judge_group, replication_groups
from orchestrator.acceptance.verdicts import RunVerdict, UtteranceSource, criteria_for, judge
from orchestrator.config.criteria import CriteriaConf
from orchestrator.registry import Run
from orchestrator.registry.liveness import settle
from orchestrator.selection import Selection, select_best

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ReportData:
    """Everything the generated blocks show: runs oldest first, their verdicts by run id, the
    declared experiments that have no run yet, replication groups' verdicts, and where
    per-utterance errors come from (for sweep bands)."""

    runs: Sequence[Run]
    verdicts: Mapping[str, RunVerdict] = field(default_factory=dict)
    planned: Sequence[str] = ()
    groups: Sequence[GroupVerdict] = ()
    utterances: UtteranceSource | None = None
    root: Path | None = None
    criteria: CriteriaConf | None = None  # the thresholds of runs that recorded none

    def verdict(self, run: Run) -> RunVerdict:
        return self.verdicts.get(run.id) or judge(run, None, criteria_for(run, self.criteria))


def collect(
    runs: Sequence[Run],
    *,
    experiments: Sequence[str] = (),
    utterances: UtteranceSource | None = None,
    criteria: CriteriaConf | None = None,
    root: Path | None = None,
) -> ReportData:
    """Judge every run (each by its recorded criteria, else `criteria`), each replication group
    (runs differing only in optim.seed), and list the declared `experiments` that have no run
    as planned."""
    runs = settle(runs, root=root)  # a `running` run whose process died reads `interrupted`
    confs = _thresholds(runs, criteria)
    selections: dict[str, Selection | None] = {}

    def selection(run: Run) -> Selection | None:  # each run's tuned interval, picked where first needed
        if run.id not in selections:
            selections[run.id] = select_best(run.intervals, confs[run.id].max_heldout_regression)
        return selections[run.id]

    utterances = _prefetched(runs, selection, utterances)
    # the judge picks the tuned interval of a run the prefetch did not ask about, from the columns it
    # reads anyway: one pass over each run's intervals, where picking all first would make two
    verdicts = {run.id: judge(run, utterances, confs[run.id], root=root, selection=selections.get(run.id))
                for run in runs}
    load = None if utterances is None else utterances.utterance_errors
    groups = [judge_group(members, verdicts, load, confs[members[0].id]) for members in replication_groups(runs)]
    ran = {run.experiment for run in runs}
    planned = [name for name in dict.fromkeys(experiments) if name not in ran]
    return ReportData(list(runs), verdicts, planned, groups, utterances, root, criteria)


def _thresholds(runs: Sequence[Run], default: CriteriaConf | None) -> dict[str, CriteriaConf]:
    """Each run's thresholds (`criteria_for`) by run id, parsed once per distinct recorded set:
    10,000 runs share a handful. Runs with equal criteria share one (unmodified) CriteriaConf."""
    parsed: dict[bytes | str, CriteriaConf] = {}
    confs = {}
    for run in runs:
        key = _exact_key(run.criteria)
        if key not in parsed:
            parsed[key] = criteria_for(run, default)
        confs[run.id] = parsed[key]
    return confs


def _exact_key(criteria: dict) -> bytes | str:
    """A key equal only for criteria of the same types and values in the same order (as their
    repr): marshal's bytes, which cost a third of repr (no float is formatted); the repr for a
    value marshal cannot write."""
    try:
        return marshal.dumps(criteria)
    except ValueError:
        return repr(criteria)


@dataclass(frozen=True)
class _Prefetched:
    """Per-utterance errors read up front, in a few set-based queries instead of four per run."""

    found: Mapping[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]

    def utterance_errors(self, run_id: str, step: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np  # loaded already: the Store built `found` with it

        return self.found.get((run_id, step, split)) or (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def _prefetched(runs: Sequence[Run], selection: Callable[[Run], Selection | None],
                source: UtteranceSource | None) -> UtteranceSource | None:
    """`source`, or (when it can read many at once, as the Store can) what judging `runs` will
    ask of it: every interval of each run with a tuned step (`selection(run)`); None if it holds
    none of those (every verdict is then a point estimate, as without a source)."""
    many = getattr(source, "utterance_errors_many", None)
    if many is None:
        return source

    def keys() -> Iterator[tuple[str, int]]:  # lazily: a registry without utterances never asks (nor picks)
        for run in runs:
            if selection(run) is not None and run.baseline is not None:  # every interval: the max-type band
                yield from ((run.id, interval.step) for interval in run.intervals)

    found = many(keys())
    return _Prefetched(found) if found else None


