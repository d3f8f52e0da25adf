"""Rendered pieces of a report kept by what they were rendered from (report/cache.py keeps them
between reports): a run's run-matrix row, a sweep's section, ... each under the digests of the
runs it shows (Store.report_runs, with the report's own inputs: cache.py).

A block asks `ReportData.piece(kind, runs, render)`: the kept value if these runs' digests are
unchanged, else `render()`, which may read the runs' intervals and verdicts, so every run it
shows must have been read (`loaded`): asking for a piece of runs read without their intervals
is a bug the report refuses (never a wrong row). Values are what JSON keeps exactly: text,
lists of text (or None), booleans.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from orchestrator.registry import Run

_ABSENT = object()


class StaleCache(Exception):
    """The kept pieces were rendered under another global input (whether any run has
    per-utterance data): every piece must be rendered anew."""


class Pieces:
    """Pieces by kind and key: `kept` (from the last report) and what this report used."""

    def __init__(self, digests: Mapping[str, str], kept: Mapping[str, Mapping[str, Any]],
                 utterances: bool | None = None):
        self.digests = digests  # a run without one (still `running`: liveness is read now) is never kept
        self.kept = kept
        self.utterances = utterances  # what `kept` was rendered under; None: nothing kept
        self.used: dict[str, dict[str, Any]] = {}
        self.loaded: Collection[str] = frozenset()  # runs read with their intervals
        self.rendered: dict[str, list[tuple[str, ...]]] = {}  # the runs of each piece rendered anew, by kind

    def key(self, runs: Sequence[Run]) -> str | None:
        """The key of a piece showing `runs` (in this order); None if a run has no digest."""
        if len(runs) == 1:
            return self.digests.get(runs[0].id)
        digests = [self.digests.get(run.id) for run in runs]
        if None in digests:
            return None
        return hashlib.blake2b("\0".join(digests).encode(), digest_size=16).hexdigest()  # type: ignore[arg-type]

    def hit(self, kind: str, runs: Sequence[Run]) -> bool:
        key = self.key(runs)
        return key is not None and key in self.kept.get(kind, {})

    def get(self, kind: str, runs: Sequence[Run], render: Callable[[], Any]) -> Any:
        key = self.key(runs)
        value = _ABSENT if key is None else self.kept.get(kind, {}).get(key, _ABSENT)
        if value is _ABSENT:
            unread = [run.id for run in runs if run.id not in self.loaded]
            if unread:
                raise RuntimeError(f"report cache: a {kind} piece of runs read without their intervals "
                                   f"({', '.join(unread[:3])}): report/cache.py plans what to read")
            value = render()
            self.rendered.setdefault(kind, []).append(tuple(run.id for run in runs))
        if key is not None:
            self.used.setdefault(kind, {})[key] = value
        return value

    def agree(self, utterances: bool) -> None:
        """Record whether the report judges with per-utterance data (any run has some); StaleCache
        if the kept pieces were rendered the other way."""
        if self.utterances is not None and self.utterances != utterances and self.kept:
            raise StaleCache
        self.utterances = utterances
