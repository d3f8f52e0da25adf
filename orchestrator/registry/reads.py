"""The reading half of the registry's `Store`: its transactions (one managed session, retried
whole on a transient conflict) and every query. Reads at scale (the report of 10,000 runs x 50
intervals): set-based queries read as plain rows unpacked by position, only the columns the
report uses (`list_runs(lean=True)`)."""
from __future__ import annotations

from datetime import datetime

import dataclasses
import hashlib
import itertools
import json
import marshal
import pickle
import random
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import JSON, Boolean, Connection, DateTime, Engine, Select, func, select, tuple_
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import RegistryError
from orchestrator.registry.engine import READ_ONLY, safe_url, _transient
from orchestrator.registry.entities import Interval, Run, UtteranceRow
from orchestrator.registry.models import Base, SqlArtifact, SqlCheck, SqlInterval, SqlRun, SqlUtteranceResult
from orchestrator.registry.rows import (ARTIFACT_COLUMNS, CHECK_COLUMNS, JUDGED_FIELDS, _RUN_ID, _STARTED_AT,
                                        _check_split, _full_intervals, _judged_intervals, _orm_run, _run_columns,
                                        _to_run, _to_utterance)

if TYPE_CHECKING:
    import numpy as np

RETRIES = 8  # attempts of one transaction on a transient conflict (backoff 0.05 s doubling, <= 2 s)
INTERVALS_PER_FETCH = 20_000  # interval rows fetched at a time by list_runs
RUNS_PER_QUERY = 2000  # run ids per IN of report_runs' interval reads
UTTERANCE_KEYS_PER_QUERY = 2000  # (run, step) pairs per IN: 4,000 bound values, under SQLite's limit
T = TypeVar("T")


class StoreReads:
    """Transactions and queries over an open engine; `Store` adds opening and the writes."""

    url: str
    _engine: Engine
    _sessions: sessionmaker

    @contextmanager
    def _session(self, *, read_only: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.
        `read_only`: one that reads a single snapshot, so its queries agree with each other: on
        SQLite a plain (deferred) BEGIN, which in WAL mode reads one snapshot and never waits
        for writers; on PostgreSQL REPEATABLE READ (which fails no transaction that only reads)."""
        session = self._sessions()
        try:
            if read_only:
                options: dict[str, Any] = {READ_ONLY: True}
                if self._engine.dialect.name == "postgresql":
                    options["isolation_level"] = "REPEATABLE READ"
                session.connection(execution_options=options)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _transact(self, work: Callable[[Session], T], *, read_only: bool = False) -> T:
        """Run `work` in one transaction; on a transient conflict roll back and run it again
        (whole, so it must only touch the database), up to RETRIES times with jittered backoff."""
        for attempt in range(1, RETRIES + 1):
            try:
                with self._session(read_only=read_only) as session:
                    return work(session)
            except OperationalError as exc:
                if attempt == RETRIES or not _transient(exc):
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def utterances(self, run_id: str, step: int, split: str) -> list[UtteranceRow]:
        """The per-utterance results of `split` at `step`, in manifest order ([] if none)."""
        _check_split(split)
        query = (
            select(SqlUtteranceResult)
            .where(SqlUtteranceResult.run_id == run_id, SqlUtteranceResult.step == step,
                   SqlUtteranceResult.split == split)
            .order_by(SqlUtteranceResult.idx)
        )
        return self._transact(lambda session: [_to_utterance(row) for row in session.scalars(query)],
                              read_only=True)

    def utterance_errors(self, run_id: str, step: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(errors, reference words) per utterance of `split` at `step`, in manifest order, as
        int64 arrays (both empty if nothing was stored): the input of the paired bootstrap."""
        _check_split(split)
        query = (
            select(SqlUtteranceResult.errors, SqlUtteranceResult.ref_words)
            .where(SqlUtteranceResult.run_id == run_id, SqlUtteranceResult.step == step,
                   SqlUtteranceResult.split == split)
            .order_by(SqlUtteranceResult.idx)
        )
        pairs = self._transact(lambda session: session.execute(query).all(), read_only=True)
        import numpy as np  # here, not at the top: a report of runs without utterances needs none

        table = np.array(pairs, dtype=np.int64).reshape(len(pairs), 2)
        return table[:, 0].copy(), table[:, 1].copy()

    def utterance_errors_many(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]:
        """`utterance_errors` for many (run_id, step) at once, every split, in a few set-based
        queries (chunks of UTTERANCE_KEYS_PER_QUERY keys): {(run_id, step, split): (errors,
        ref_words)}; keys without stored utterances are absent. A registry without any
        per-utterance result (only external runs, say) answers after one tiny query."""
        any_stored = select(SqlUtteranceResult.run_id).limit(1)
        if self._transact(lambda session: session.scalar(any_stored), read_only=True) is None:
            return {}
        keys = sorted(set(keys))
        columns = (SqlUtteranceResult.run_id, SqlUtteranceResult.step, SqlUtteranceResult.split,
                   SqlUtteranceResult.errors, SqlUtteranceResult.ref_words)
        rows: list[Any] = []
        for start in range(0, len(keys), UTTERANCE_KEYS_PER_QUERY):
            chunk = keys[start:start + UTTERANCE_KEYS_PER_QUERY]
            query = (select(*columns)
                     .where(tuple_(SqlUtteranceResult.run_id, SqlUtteranceResult.step).in_(chunk))
                     .order_by(SqlUtteranceResult.run_id, SqlUtteranceResult.step, SqlUtteranceResult.split,
                               SqlUtteranceResult.idx))
            rows += self._transact(lambda session: session.execute(query).all(), read_only=True)
        import numpy as np  # here, not at the top: a report of runs without utterances needs none

        found: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}
        for key, group in itertools.groupby(rows, key=lambda row: (row[0], row[1], row[2])):
            table = np.array([(row[3], row[4]) for row in group], dtype=np.int64).reshape(-1, 2)
            found[key] = (table[:, 0].copy(), table[:, 1].copy())
        return found

    def runs_with_hash(self, config_hash: str) -> list[Run]:
        """Runs made by this tool (not external) with this identity hash, oldest first."""
        return self._runs(SqlRun.config_hash == config_hash, SqlRun.external.is_(False))

    def get_run(self, run_id: str) -> Run:
        """The run with its intervals and artifacts; RegistryError if there is none."""
        return self._transact(lambda session: _orm_run(self._require(session, run_id)), read_only=True)

    def list_runs(self, *, sweep_id: str | None = None, run_ids: Iterable[str] | None = None,
                  lean: bool = False, since: datetime | None = None) -> list[Run]:
        """All runs (or those of `sweep_id`, or those in `run_ids`), oldest first, with their
        intervals, artifacts and checks (not the per-utterance results: read those with
        `utterance_errors` / `utterances`).

        `lean=True` reads what the report judges and shows, no more: of each interval only
        JUDGED_FIELDS (its other fields are None), of each run neither `targets` nor
        `data_stats` (empty), and `config` only for a run in a sweep or still `running` (the
        sweep tables compare configs, liveness reads `output_dir`; other runs' is empty). At
        10,000 runs x 50 intervals: 4 of 9 interval columns, no interval timestamp to convert,
        and a fraction of the JSON to parse."""
        where = []
        if sweep_id is not None:
            where.append(SqlRun.sweep_id == sweep_id)
        if run_ids is not None:
            where.append(SqlRun.id.in_(list(run_ids)))
        if since is not None:  # runs started at or after it (`orchestrator watch --since`)
            where.append(SqlRun.started_at >= since)
        return self._runs(*where, lean=lean)

    def _runs(self, *where: Any, lean: bool = False) -> list[Run]:
        """The runs matching `where`, oldest first, in four set-based queries read as plain rows
        and unpacked by position (no ORM objects, no lookup by column name): the runs with how
        many intervals each has, then their intervals, artifacts and checks."""
        chosen = select(SqlRun.id).where(*where)
        within = (chosen,) if where else ()

        def load(session: Session) -> list[Run]:
            connection = session.connection()  # Core results: the session's ORM result layer adds nothing here
            table = SqlRun.__table__
            count = select(func.count()).where(SqlInterval.run_id == table.c.id).scalar_subquery()
            rows = connection.execute(select(count, *_run_columns(lean)).where(*where).order_by(table.c.id)).all()
            # by run id, as `rows`
            by_run = _intervals_of(connection, chosen, [row[0] for row in rows], lean, self.url)
            artifacts = _children(connection, SqlArtifact, ARTIFACT_COLUMNS, within)
            checks = _children(connection, SqlCheck, CHECK_COLUMNS, within)
            runs = [_to_run(row[1:], found, artifacts.get(row[1], ()), checks.get(row[1], ()))
                    for row, found in zip(rows, by_run)]
            runs.sort(key=_STARTED_AT)  # stable: ties stay by id, as ORDER BY started_at, id
            return runs

        return self._transact(load, read_only=True)

    def report_runs(self, choose: Callable[[list[Run], Mapping[str, str]], tuple[Collection[str], Collection[str]]]
                    ) -> tuple[list[Run], dict[str, str]]:
        """Every run, oldest first, read in one snapshot in two steps, for a report that keeps
        what it rendered from runs that did not change (report/cache.py).

        First every run as `list_runs(lean=True)` reads it but without intervals, and a digest
        of each: of its row as read with its `interval_writes` (add_interval counts every insert
        or replacement of an interval there, in the interval's transaction: no interval row is
        read for it), its artifacts and checks. Anything recorded about a run changes its
        digest: a new interval, a replaced one (its per-utterance results are written with it),
        a status, an annotation, an artifact, a check. Then `choose(runs, digests)` names the
        runs whose intervals to read, (lean ones, full ones); returns the runs, those with their
        intervals, and the digests."""
        def load(session: Session) -> tuple[list[Run], dict[str, str]]:
            connection = session.connection()
            table, intervals = SqlRun.__table__, SqlInterval.__table__
            # in table order, sorted here: ORDER BY id would visit the rows through the id index (twice the cost)
            stored, read_run = _stored_rows(connection, select(*_run_columns(True), table.c.interval_writes))
            stored.sort(key=_RUN_ID)
            artifacts, read_artifact = _stored_children(connection, SqlArtifact, ARTIFACT_COLUMNS)
            checks, read_check = _stored_children(connection, SqlCheck, CHECK_COLUMNS)
            digests, shells = {}, []
            for row in stored:
                run_id = row[0]
                found = (row, artifacts.get(run_id, ()), checks.get(run_id, ()))
                digests[run_id] = hashlib.blake2b(_value_bytes(found), digest_size=16).hexdigest()
                shells.append(_to_run(read_run(row)[:-1], (), map(read_artifact, found[1]), map(read_check, found[2])))
            shells.sort(key=_STARTED_AT)  # stable: ties stay by id, as list_runs
            lean, full = choose(shells, digests)
            wanted = {**dict.fromkeys(lean, True), **dict.fromkeys(full, False)}
            order = [row[0] for row in stored if row[0] in wanted]  # by id, as the interval rows come
            every = len(order) == len(stored)
            counted = select(intervals.c.run_id, func.count()).group_by(intervals.c.run_id)
            if every:
                counts_of = dict(connection.execute(counted).all())
            else:  # the runs read: their counts alone, not a GROUP BY over every interval
                counts_of = {}
                for start in range(0, len(order), RUNS_PER_QUERY):
                    chunk = order[start:start + RUNS_PER_QUERY]
                    counts_of.update(connection.execute(counted.where(intervals.c.run_id.in_(chunk))).all())
            read: dict[str, tuple[Interval, ...]] = {}
            for is_lean in (True, False):
                ids = [run_id for run_id in order if wanted[run_id] is is_lean]
                counts = [counts_of.get(run_id, 0) for run_id in ids]
                if len(ids) == len(stored):  # every run: one query (of the runs' rows: never an orphan's)
                    found = _intervals_of(connection, select(table.c.id), counts, is_lean, self.url)
                    read.update(zip(ids, found))
                    continue
                for start in range(0, len(ids), RUNS_PER_QUERY):
                    chunk = ids[start:start + RUNS_PER_QUERY]
                    found = _intervals_of(connection, chunk, counts[start:start + RUNS_PER_QUERY], is_lean, self.url)
                    read.update(zip(chunk, found))
            runs = [dataclasses.replace(run, intervals=read[run.id]) if run.id in read else run for run in shells]
            return runs, digests

        return self._transact(load, read_only=True)

    def _require(self, session: Session, run_id: str) -> SqlRun:
        row = session.get(SqlRun, run_id)
        if row is None:
            raise RegistryError(
                f"no run {run_id!r} in the registry",
                where=safe_url(self.url),
                fix="see `orchestrator runs`",
            )
        return row

    def orphan_counts(self) -> dict[str, int]:
        """Rows whose parent row is missing, by table: intervals, artifacts and checks without
        their run, utterance results without their interval. Foreign keys make these impossible
        in a database this code wrote; a copy edited by hand or with foreign keys off can hold them."""
        from sqlalchemy import and_, exists

        def count(session: Session) -> dict[str, int]:
            out = {}
            for name, model in (("intervals", SqlInterval), ("artifacts", SqlArtifact), ("checks", SqlCheck)):
                orphan = ~exists().where(SqlRun.id == model.run_id)
                out[name] = session.scalar(select(func.count()).select_from(model).where(orphan))
            parent = exists().where(and_(SqlInterval.run_id == SqlUtteranceResult.run_id,
                                         SqlInterval.step == SqlUtteranceResult.step))
            out["utterance_results"] = session.scalar(
                select(func.count()).select_from(SqlUtteranceResult).where(~parent))
            return out

        return self._transact(count, read_only=True)


def _children(connection: Connection, model: type[Base], names: Sequence[str], within: Sequence[Any]
              ) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of a run's child table (artifacts, checks) by run id, `names` of each; of the
    runs a select of ids in `within` names, or of every run."""
    stored, read = _stored_children(connection, model, names, within)
    return {run_id: [tuple(read(row)) for row in rows] for run_id, rows in stored.items()}


def _value_bytes(value: Any) -> bytes:
    """Bytes equal only for equal values: marshal's, for plain values (SQLite's stored rows: text,
    numbers, None), a fifth of pickle's cost; pickle's for anything else (datetimes, dicts of
    another database's rows). Either unserialises to an equal value, so unequal ones never share them."""
    try:
        return marshal.dumps(value)
    except ValueError:
        return pickle.dumps(value, 5)


def _stored_rows(connection: Connection, query: Select, skip: int = 0
                 ) -> tuple[list[tuple[Any, ...]], Callable[[Sequence[Any]], Sequence[Any]]]:
    """The rows of `query` as the database holds them, and what turns one (less its first `skip`
    columns) into the values SQLAlchemy would have read. On SQLite, the DBAPI cursor's own tuples
    (timestamps and JSON as text, booleans as 0/1), which cost a third of SQLAlchemy's rows at
    10,000 runs: timestamps are read by datetime.fromisoformat (SQLAlchemy stores them in ISO
    format), JSON by json.loads, booleans by bool. Elsewhere, or for a column of a type not named
    here, SQLAlchemy's own rows and no conversion."""
    convert = _sqlite_conversions(connection.dialect, query, skip)
    if convert is None:
        return [tuple(row) for row in connection.execute(query).all()], lambda row: row
    result = connection.execute(query)
    try:
        rows = result.cursor.fetchall()
    finally:
        result.close()

    def read(row: Sequence[Any]) -> Sequence[Any]:
        values = list(row)
        for i, f in convert:
            if values[i] is not None:
                values[i] = f(values[i])
        return values

    return rows, read


_CONVERSIONS = ((DateTime, datetime.fromisoformat), (JSON, json.loads), (Boolean, bool))


def _sqlite_conversions(dialect, query: Select, skip: int) -> list[tuple[int, Callable[[Any], Any]]] | None:
    """(position less `skip`, conversion) of each column of `query` whose stored SQLite value
    SQLAlchemy would convert; None off SQLite or for a column type not in _CONVERSIONS."""
    if dialect.name != "sqlite":
        return None
    convert = []
    for i, column in enumerate(query.selected_columns):
        if column.type.dialect_impl(dialect).result_processor(dialect, None) is None:
            continue
        found = next((f for kind, f in _CONVERSIONS if isinstance(column.type, kind)), None)
        if found is None:
            return None
        convert.append((i - skip, found))
    return convert


def _stored_children(connection: Connection, model: type[Base], names: Sequence[str], within: Sequence[Any] = ()
                     ) -> tuple[dict[str, list[tuple[Any, ...]]], Callable[[Sequence[Any]], Sequence[Any]]]:
    """`_children`'s rows as `_stored_rows` reads them: `names` of each, grouped by run id, and
    the conversion of one."""
    table = model.__table__
    query = select(table.c.run_id, *(table.c[name] for name in names)).order_by(table.c.run_id, table.c[names[0]])
    if within:
        query = query.where(table.c.run_id.in_(within[0]))
    rows, read = _stored_rows(connection, query, skip=1)
    return {run_id: [row[1:] for row in group] for run_id, group in itertools.groupby(rows, key=_RUN_ID)}, read


def _intervals_of(connection: Connection, runs: Any, counts: Sequence[int], lean: bool, url: str
                  ) -> list[tuple[Interval, ...]]:
    """The intervals of each run, in the order of run ids, `counts` of them: their rows in (run
    id, step) order, cut by the counts. `runs`: a select of run ids or a list of them. Read in
    the transaction's one snapshot (see StoreReads._session), rows and counts agree; rows
    without their run id are 500,000 strings fewer for the report. `lean`: JUDGED_FIELDS only."""
    table = SqlInterval.__table__
    query = select(*(table.c[name] for name in (JUDGED_FIELDS if lean else Interval._fields)))
    query = query.where(table.c.run_id.in_(runs)).order_by(table.c.run_id, table.c.step)
    build = _judged_intervals if lean else _full_intervals
    found: list[Interval] = []
    for part in _partitions(connection, query, INTERVALS_PER_FETCH):
        found += build(part)
    if len(found) != sum(counts):  # not one snapshot after all: never cut rows wrongly
        raise RegistryError("the registry's intervals changed while they were read",
                            where=safe_url(url), fix="run the command again")
    every, cut = tuple(found), [0, *itertools.accumulate(counts)]  # a tuple's slices are tuples
    return [every[start:stop] for start, stop in zip(cut, cut[1:])]


def _partitions(connection: Connection, query: Select, size: int) -> Iterator[Sequence[Any]]:
    """The rows of `query`, `size` at a time (fetchmany: a few MiB of rows at a time, where one
    fetchall of 500,000 would hold 150 MiB and page-fault it in; iterating fetches row by row).
    On SQLite, when no selected column needs converting (integers and floats: the lean intervals),
    the DBAPI cursor's own tuples: a SQLAlchemy Row apiece costs more than the Interval built from it."""
    result = connection.execute(query)
    dialect = connection.dialect
    if dialect.name != "sqlite" or any(column.type.dialect_impl(dialect).result_processor(dialect, None) is not None
                                       for column in query.selected_columns):
        yield from result.partitions(size)
        return
    try:
        while part := result.cursor.fetchmany(size):
            yield part
    finally:
        result.close()
