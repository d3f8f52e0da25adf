"""Judge every run of a report once: ReportData (runs, verdicts, replication groups, planned
experiments) and `collect`, which reads per-utterance errors up front in a few queries."""
from __future__ import annotations

import marshal
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
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

    from orchestrator.report.pieces import Pieces


@dataclass(frozen=True)
class ReportData:
    """Everything the generated blocks show: runs oldest first, their verdicts by run id, the
    declared experiments that have no run yet, replication groups' verdicts, and where
    per-utterance errors come from (for sweep bands).

    With `pieces` (a report kept by report/cache.py), only the runs in `pieces.loaded` were read
    with their intervals and judged, and only the replication groups whose piece was not kept;
    `group_members` has every group's runs."""

    runs: Sequence[Run]
    verdicts: Mapping[str, RunVerdict] = field(default_factory=dict)
    planned: Sequence[str] = ()
    groups: Sequence[GroupVerdict] = ()
    utterances: UtteranceSource | None = None
    root: Path | None = None
    criteria: CriteriaConf | None = None  # the thresholds of runs that recorded none
    group_members: Sequence[Sequence[Run]] = ()
    pieces: Pieces | None = None

    def verdict(self, run: Run) -> RunVerdict:
        found = self.verdicts.get(run.id)
        if found is None and self.pieces is not None:
            raise RuntimeError(f"report cache: {run.id} was not judged (read without its intervals)")
        return found or judge(run, None, criteria_for(run, self.criteria))

    def piece(self, kind: str, runs: Sequence[Run], render: Callable[[], Any]) -> Any:
        """`render()`, or the piece kept from the last report if `runs` did not change (pieces.py)."""
        return render() if self.pieces is None else self.pieces.get(kind, runs, render)


def collect(
    runs: Sequence[Run],
    *,
    experiments: Sequence[str] = (),
    utterances: UtteranceSource | None = None,
    criteria: CriteriaConf | None = None,
    root: Path | None = None,
    pieces: Pieces | None = None,
) -> ReportData:
    """Judge every run (each by its recorded criteria, else `criteria`), each replication group
    (runs differing only in optim.seed), and list the declared `experiments` that have no run
    as planned. With `pieces`, only the runs read with their intervals (`pieces.loaded`), and
    the groups whose piece was not kept; StaleCache if the kept pieces cannot be used."""
    runs = settle(runs, root=root)  # a `running` run whose process died reads `interrupted`
    judged = runs if pieces is None else [run for run in runs if run.id in pieces.loaded]
    confs = _thresholds(judged, criteria)
    selections: dict[str, Selection | None] = {}

    def selection(run: Run) -> Selection | None:  # each run's tuned interval, picked where first needed
        if run.id not in selections:
            selections[run.id] = select_best(run.intervals, confs[run.id].max_heldout_regression)
        return selections[run.id]

    utterances = _prefetched(judged, selection, utterances, runs, pieces)
    # the judge picks the tuned interval of a run the prefetch did not ask about, from the columns it
    # reads anyway: one pass over each run's intervals, where picking all first would make two
    verdicts = {run.id: judge(run, utterances, confs[run.id], root=root, selection=selections.get(run.id))
                for run in judged}
    load = None if utterances is None else utterances.utterance_errors
    members = replication_groups(runs)
    groups = [judge_group(group, verdicts, load, confs[group[0].id]) for group in members
              if pieces is None or not pieces.hit("group", group)]
    ran = {run.experiment for run in runs}
    planned = [name for name in dict.fromkeys(experiments) if name not in ran]
    return ReportData(list(runs), verdicts, planned, groups, utterances, root, criteria, members, pieces)


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
                source: UtteranceSource | None, every: Sequence[Run] = (),
                pieces: Pieces | None = None) -> UtteranceSource | None:
    """`source`, or (when it can read many at once, as the Store can) what judging `runs` will
    ask of it: every interval of each run with a tuned step (`selection(run)`); None if it holds
    none of those (every verdict is then a point estimate, as without a source). With `pieces`,
    `runs` are those judged of `every`: whether any of `every` has per-utterance data is each
    run's "utterances" piece, kept for those not judged (StaleCache if the kept pieces were
    rendered the other way)."""
    many = getattr(source, "utterance_errors_many", None)
    if many is None:
        return source

    def keys() -> Iterator[tuple[str, int]]:  # lazily: a registry without utterances never asks (nor picks)
        for run in runs:
            if selection(run) is not None and run.baseline is not None:  # every interval: the max-type band
                yield from ((run.id, interval.step) for interval in run.intervals)

    found = many(keys())
    held = found
    if pieces is not None:
        with_data = {key[0] for key in found}
        held = False
        for run in every:  # every run's, so that each is kept
            held |= pieces.get("utterances", [run], lambda run=run: run.id in with_data)
        pieces.agree(held)
    return _Prefetched(found) if held else None
