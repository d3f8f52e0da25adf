"""The run registry: the only code that touches the database. It returns plain entities.

Modelled on MLflow's SqlAlchemyStore: one managed-session helper, SQLite pragmas set on
connect, and the schema owned by alembic (`upgrade head` on open; a database at a revision
this code does not know is refused).

Under load (parallel sweep points, many writers on one registry): every write is one short
transaction, retried whole when the database reports a transient conflict (SQLite "database is
locked" after its busy timeout, PostgreSQL serialization failures and deadlocks). SQLite runs
in WAL mode; writers take the lock up front (BEGIN IMMEDIATE), readers do not, so the report
never blocks a run. Migration happens only when the schema is behind, under a lock (SQLite's
write lock, a PostgreSQL advisory lock): processes opening the same registry never race it.
A registry already at head opens without importing alembic at all.

Reads at scale (the report of 10,000 runs x 50 intervals): set-based queries read as plain rows
unpacked by position, only the columns the report uses (`list_runs(lean=True)`).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import operator
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (Connection, Engine, Text, case, cast, column, create_engine, delete, event, exists, func,
                        insert, inspect, null, or_, select, table, tuple_, update)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import RegistryError
from orchestrator.registry.entities import Artifact, Check, Interval, Run, RunStatus, UtteranceRow
from orchestrator.registry.models import Base, SqlArtifact, SqlCheck, SqlInterval, SqlRun, SqlUtteranceResult

if TYPE_CHECKING:
    import numpy as np
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions/ (tests/test_report_scale.py checks it is alembic's
# head): a database already there opens without importing alembic, a fifth of a report's start.
HEAD_REVISION = "0004"
ALEMBIC_VERSION = table("alembic_version", column("version_num"))
# What judging a run reads of its intervals (orchestrator/verdicts.py), all that
# `list_runs(lean=True)` reads of them.
JUDGED_FIELDS = ("step", "eval_loss", "domain_wer", "heldout_wer", "select_wer")
# The columns of `runs` in Run's order (its intervals, artifacts and checks come from their own
# tables), and those of artifacts and checks in Artifact's and Check's: reads unpack rows by
# position. tests/test_report_scale.py checks them against the tables and the entities.
RUN_COLUMNS = ("id", "experiment", "status", "config", "config_hash", "model_id", "targets", "target_summary",
               "lr", "steps", "dora", "git_commit", "data_stats", "started_at", "ended_at", "failure_reason",
               "external", "criteria", "target_report", "annotation_status", "annotation_note", "sweep_id",
               "heartbeat_at", "host", "pid", "stop_reason")
ARTIFACT_COLUMNS = ("kind", "path", "sha256", "step", "created_at")
CHECK_COLUMNS = ("name", "passed", "details", "created_at")
# WAL with synchronous=NORMAL: a commit survives any crash of the writing process (the WAL is in
# the OS page cache) and the database stays consistent after a power loss, which may drop the
# last commits; commits then cost no fsync, so parallel writers are not serialised on the disk.
SQLITE_PRAGMAS = ("busy_timeout = 30000", "foreign_keys = ON", "journal_mode = WAL", "synchronous = NORMAL")
SPLITS = ("domain", "heldout", "select")  # "select": the dev set, eval.select_manifest
UTTERANCE_FIELDS = ("audio_filepath", "reference", "hypothesis", "errors", "ref_words")
ANNOTATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")
READ_ONLY = "orchestrator_read_only"  # execution option: a SQLite transaction that takes no write lock
RETRIES = 8  # attempts of one transaction on a transient conflict (backoff 0.05 s doubling, <= 2 s)
TRANSIENT_SQLSTATES = ("40001", "40P01")  # PostgreSQL: serialization failure, deadlock detected
MIGRATION_LOCK = 0x6D6F6F6E73686E65  # PostgreSQL advisory lock held while migrating ("moonshne")
INTERVALS_PER_FETCH = 20_000  # interval rows fetched at a time by list_runs
UTTERANCE_KEYS_PER_QUERY = 2000  # (run, step) pairs per IN: 4,000 bound values, under SQLite's limit
T = TypeVar("T")


class Store:
    """Open (and migrate) the registry at a SQLAlchemy URL, e.g. `sqlite:///registry.db`."""

    def __init__(self, url: str):
        self.url = url
        try:
            self._engine = _open(url)
        except (SQLAlchemyError, ImportError) as exc:
            raise RegistryError(
                f"cannot open the registry database ({_first_line(exc)})",
                where=_safe_url(url),
                fix=_open_fix(url),
            ) from exc
        self._sessions = sessionmaker(self._engine)

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

    def create_run(
        self,
        *,
        experiment: str,
        config: dict[str, Any],
        config_hash: str,
        model_id: str,
        targets: list[str],
        target_summary: str,
        lr: float,
        steps: int,
        dora: bool,
        git_commit: str | None,
        data_stats: dict[str, Any] | None = None,
        run_id: str | None = None,
        criteria: dict[str, Any] | None = None,
        target_report: dict[str, Any] | None = None,
        external: bool = False,
        sweep_id: str | None = None,
    ) -> Run:
        """Record a new run with status "running" and return it.

        `criteria` are the acceptance thresholds the run is judged by (the composed
        `criteria` config), `target_report` what target resolution found (see
        `verdicts.target_report`); both are kept with the run."""
        started_at = _now()
        run_id = run_id or _new_id(experiment, started_at)
        values = dict(
            id=run_id,
            experiment=experiment,
            status="running",
            config=config,
            config_hash=config_hash,
            model_id=model_id,
            targets=list(targets),
            target_summary=target_summary,
            lr=lr,
            steps=steps,
            dora=dora,
            git_commit=git_commit,
            data_stats=data_stats or {},
            started_at=started_at,
            external=external,
            criteria=criteria,
            target_report=target_report,
            sweep_id=sweep_id,
            heartbeat_at=started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

        def insert_run(session: Session) -> Run:
            row = SqlRun(**values)
            session.add(row)
            session.flush()
            return _orm_run(row)

        return self._insert_run(run_id, insert_run)

    def record_external(
        self,
        *,
        experiment: str,
        model_id: str,
        steps: int,
        lr: float,
        target_summary: str,
        dora: bool,
        intervals: Sequence[Mapping[str, Any]],
        annotation_status: str | None = None,
        annotation_note: str | None = None,
        criteria: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> Run:
        """Enter a run made outside the tool, with the metrics it reported, in one transaction.

        It is marked `external` and `completed`; `intervals` are dicts of Interval fields
        (`step` required; WERs as fractions). There are no artifacts or per-utterance data,
        so its verdicts rest on the point estimates."""
        fields = set(Interval._fields) - {"created_at"}
        for values in intervals:
            if "step" not in values or set(values) - fields:
                raise RegistryError(f"interval {dict(values)} needs a step and only the fields "
                                    f"{', '.join(sorted(fields))}", fix="e.g. {'step': 600, 'domain_wer': 0.1264}")
        for values in intervals:
            check_wers(values, where=f"step {values['step']}")
        steps_seen = [int(i["step"]) for i in intervals]
        if len(set(steps_seen)) != len(steps_seen):
            raise RegistryError(f"external run {experiment!r} repeats a step: {sorted(steps_seen)}",
                                fix="give each step once")
        if annotation_status is not None:
            _check_annotation(annotation_status)
        now = _now()
        run_id = run_id or _new_id(experiment, now)
        config = {"external": {"experiment": experiment, "model_id": model_id, "steps": steps,
                               "lr": lr, "targets": target_summary, "dora": dora}}
        values = dict(
            id=run_id, experiment=experiment, status="completed", config=config,
            config_hash=hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
            model_id=model_id, targets=[], target_summary=target_summary, lr=lr, steps=steps,
            dora=dora, git_commit=None, data_stats={}, started_at=now, ended_at=now,
            external=True, criteria=criteria, annotation_status=annotation_status,
            annotation_note=annotation_note,
        )

        def insert_run(session: Session) -> None:
            session.add(SqlRun(**values))
            session.flush()
            session.add_all(SqlInterval(run_id=run_id, created_at=now, **point) for point in intervals)

        self._insert_run(run_id, insert_run)
        return self.get_run(run_id)

    def add_interval(
        self,
        run_id: str,
        *,
        step: int,
        lr: float | None = None,
        train_loss: float | None = None,
        eval_loss: float | None = None,
        domain_wer: float | None = None,
        heldout_wer: float | None = None,
        domain_utts: int | None = None,
        heldout_utts: int | None = None,
        select_wer: float | None = None,
        select_utts: int | None = None,
        utterances: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        """Record the metrics at `step`, committed at once; a second call for the same
        step replaces the whole row (fields left out become NULL).

        `utterances` maps a split ("domain", "heldout") to what its evaluation produced per
        utterance, in manifest order: `evaluate.UtteranceResult`s or dicts with the keys
        audio_filepath, reference, hypothesis, errors, ref_words. They are written in the
        same transaction as the interval and replace that split's earlier rows for `step`;
        a split left out keeps its rows."""
        check_wers(dict(domain_wer=domain_wer, heldout_wer=heldout_wer, select_wer=select_wer), where=f"step {step}")
        rows = _utterance_rows(run_id, step, utterances or {})
        values = dict(
            lr=lr,
            train_loss=train_loss,
            eval_loss=eval_loss,
            domain_wer=domain_wer,
            heldout_wer=heldout_wer,
            domain_utts=domain_utts,
            heldout_utts=heldout_utts,
            select_wer=select_wer,
            select_utts=select_utts,
            created_at=_now(),
        )

        def write(session: Session) -> None:
            # one INSERT .. ON CONFLICT: an unknown run fails its foreign key (reported below)
            _upsert(session, SqlInterval, (run_id, step), run_id=run_id, step=step, **values)
            session.flush()  # the interval row exists before its utterances reference it
            for split in utterances or {}:
                session.execute(delete(SqlUtteranceResult).where(
                    SqlUtteranceResult.run_id == run_id, SqlUtteranceResult.step == step,
                    SqlUtteranceResult.split == split))
            if rows:
                session.execute(insert(SqlUtteranceResult), rows)

        try:
            self._transact(write)
        except IntegrityError:
            self._transact(lambda session: self._require(session, run_id), read_only=True)
            raise

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

    def add_check(self, run_id: str, name: str, passed: bool, details: dict[str, Any] | None = None) -> None:
        """Record the outcome of check `name` (e.g. "parity") on a run, replacing an earlier one."""
        values = dict(passed=bool(passed), details=details or {}, created_at=_now())

        def write(session: Session) -> None:
            self._require(session, run_id)
            _upsert(session, SqlCheck, (run_id, name), run_id=run_id, name=name, **values)

        self._transact(write)

    def annotate(self, run_id: str, status: str | None, note: str | None = None) -> None:
        """Record a person's judgment of a run (e.g. "flawed" and why); it overrides the
        derived status in the report. `status=None` removes the annotation."""
        if status is not None:
            _check_annotation(status)

        def write(session: Session) -> None:
            row = self._require(session, run_id)
            row.annotation_status = status
            row.annotation_note = note if status is not None else None

        self._transact(write)

    def add_artifact(
        self, run_id: str, *, kind: str, path: str, sha256: str, step: int | None = None
    ) -> None:
        """Record the file of `kind` a run produced, replacing an earlier one of that kind."""
        values = dict(path=path, sha256=sha256, step=step, created_at=_now())

        def write(session: Session) -> None:
            self._require(session, run_id)
            _upsert(session, SqlArtifact, (run_id, kind), run_id=run_id, kind=kind, **values)

        self._transact(write)

    def finish_run(self, run_id: str, status: str, reason: str | None = None, *,
                   stop_reason: str | None = None) -> None:
        """Close a run with its final status (a RunStatus), why it failed (`reason`) and, for a
        run that ended before its last step (early stopping, a pruned trial), `stop_reason`."""
        self._update_run(run_id, status=str(status), failure_reason=reason, stop_reason=stop_reason,
                         ended_at=_now())

    def reopen(self, run_id: str) -> None:
        """Mark a run `running` again (it is being resumed) by this process: clears its end time
        and failure, and takes over its heartbeat."""
        self._update_run(run_id, status=str(RunStatus.RUNNING), failure_reason=None, stop_reason=None, ended_at=None,
                         **_beat())

    def heartbeat(self, run_id: str) -> None:
        """Record that this process is alive and training `run_id` (one small UPDATE; the
        trainer calls it every few seconds at most). A stale heartbeat is how a run left
        `running` by a process on another host is recognised as interrupted."""
        self._update_run(run_id, **_beat())

    def runs_with_hash(self, config_hash: str) -> list[Run]:
        """Runs made by this tool (not external) with this identity hash, oldest first."""
        return self._runs(SqlRun.config_hash == config_hash, SqlRun.external.is_(False))

    def get_run(self, run_id: str) -> Run:
        """The run with its intervals and artifacts; RegistryError if there is none."""
        return self._transact(lambda session: _orm_run(self._require(session, run_id)), read_only=True)

    def list_runs(self, *, sweep_id: str | None = None, run_ids: Iterable[str] | None = None,
                  lean: bool = False) -> list[Run]:
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
        return self._runs(*where, lean=lean)

    def _runs(self, *where: Any, lean: bool = False) -> list[Run]:
        """The runs matching `where`, oldest first, in four set-based queries read as plain rows
        and unpacked by position (no ORM objects, no lookup by column name): the runs with how
        many intervals each has, then their intervals, artifacts and checks."""
        chosen = select(SqlRun.id).where(*where)

        def children(connection: Connection, model: type[Base], names: Sequence[str]) -> dict[str, list[Any]]:
            table = model.__table__
            query = select(table.c.run_id, *(table.c[name] for name in names)).order_by(table.c.run_id, table.c[names[0]])
            if where:
                query = query.where(table.c.run_id.in_(chosen))
            rows = connection.execute(query).all()
            return {run_id: [row[1:] for row in group] for run_id, group in itertools.groupby(rows, key=_RUN_ID)}

        def intervals(connection: Connection, counts: Sequence[int]) -> list[tuple[Interval, ...]]:
            """The intervals of each run, in the order of run ids, `counts` of them: their rows
            in (run id, step) order, cut by the counts. Read in the transaction's one snapshot
            (see _session), rows and counts agree; rows without their run id are 500,000 strings
            fewer for the report."""
            table = SqlInterval.__table__
            query = select(*(table.c[name] for name in (JUDGED_FIELDS if lean else Interval._fields)))
            query = query.where(table.c.run_id.in_(chosen)).order_by(table.c.run_id, table.c.step)
            build = _judged_intervals if lean else _full_intervals
            found: list[Interval] = []
            # by partitions (fetchmany): a few MiB of rows at a time, where one fetchall of 500,000
            # would hold 150 MiB (and page-fault it in); iterating the result fetches row by row
            for part in connection.execute(query).partitions(INTERVALS_PER_FETCH):
                found += build(part)
            if len(found) != sum(counts):  # not one snapshot after all: never cut rows wrongly
                raise RegistryError("the registry's intervals changed while they were read",
                                    where=_safe_url(self.url), fix="run the command again")
            every, cut = tuple(found), [0, *itertools.accumulate(counts)]  # a tuple's slices are tuples
            return [every[start:stop] for start, stop in zip(cut, cut[1:])]

        def load(session: Session) -> list[Run]:
            connection = session.connection()  # Core results: the session's ORM result layer adds nothing here
            table = SqlRun.__table__
            count = select(func.count()).where(SqlInterval.run_id == table.c.id).scalar_subquery()
            rows = connection.execute(select(count, *_run_columns(lean)).where(*where).order_by(table.c.id)).all()
            by_run = intervals(connection, [row[0] for row in rows])  # by run id, as `rows`
            artifacts = children(connection, SqlArtifact, ARTIFACT_COLUMNS)
            checks = children(connection, SqlCheck, CHECK_COLUMNS)
            runs = [_to_run(row[1:], found, artifacts.get(row[1], ()), checks.get(row[1], ()))
                    for row, found in zip(rows, by_run)]
            runs.sort(key=_STARTED_AT)  # stable: ties stay by id, as ORDER BY started_at, id
            return runs

        return self._transact(load, read_only=True)

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def _insert_run(self, run_id: str, work: Callable[[Session], T]) -> T:
        """Run `work`, which inserts run `run_id`, in one transaction; an existing id is a
        RegistryError."""
        try:
            return self._transact(work)
        except IntegrityError as exc:
            if not any(name in str(exc.orig) for name in ("runs.id", "pk_runs")):
                raise
            raise RegistryError(
                f"run {run_id!r} already exists", where=_safe_url(self.url), fix="use a new run id"
            ) from None

    def _update_run(self, run_id: str, **values: Any) -> None:
        """Set columns of one run in one UPDATE; an unknown id is a RegistryError."""
        statement = update(SqlRun).where(SqlRun.id == run_id).values(**values)
        if self._transact(lambda session: session.execute(statement).rowcount) == 0:
            self._transact(lambda session: self._require(session, run_id), read_only=True)

    def _require(self, session: Session, run_id: str) -> SqlRun:
        row = session.get(SqlRun, run_id)
        if row is None:
            raise RegistryError(
                f"no run {run_id!r} in the registry",
                where=_safe_url(self.url),
                fix="see `orchestrator runs`",
            )
        return row

    # --- consistency checks and status repairs (`orchestrator doctor`) ------------------------

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

    def mark_interrupted(self, run_id: str, note: str, *, seen_heartbeat: datetime | None) -> bool:
        """`running` -> `interrupted` with `note` as its reason, only if the run is still
        `running` with the heartbeat the caller saw (a run resumed in the meantime took over the
        heartbeat and is left alone). Returns whether it changed. Nothing else is touched."""
        def write(session: Session) -> bool:
            row = self._require(session, run_id)
            beat = _utc(row.heartbeat_at) if row.heartbeat_at else None
            if row.status != "running" or beat != seen_heartbeat:
                return False
            row.status, row.failure_reason, row.ended_at = "interrupted", note, _now()
            return True

        return self._transact(write)


def _open(url: str) -> Engine:
    """An engine whose database is at alembic head; nothing left open if that fails."""
    sqlite = make_url(url).get_backend_name() == "sqlite"
    engine = create_engine(url) if sqlite else create_engine(url, pool_pre_ping=True)
    if sqlite:
        _configure_sqlite(engine)
    try:
        _migrate(engine, url)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """Per-connection pragmas, and BEGIN IMMEDIATE so every writing transaction (migrations
    included) takes the write lock up front: parallel runs wait (busy_timeout) instead of
    failing when they upgrade a read to a write, and DDL is transactional. Reads (READ_ONLY)
    begin deferred: under WAL they never wait for a writer."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@functools.lru_cache(maxsize=1)
def _revisions() -> tuple[frozenset[str], str]:
    """(every revision this code knows, the head), read once per process."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(""))
    return frozenset(s.revision for s in script.walk_revisions()), script.get_current_head()


def _alembic_config(url: str, connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _current_revision(connection: Connection, url: str) -> str | None:
    """The database's alembic revision (None: no schema yet); one this code does not know is
    refused."""
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(connection).get_current_revision()
    known, _ = _revisions()
    if current is not None and current not in known:
        raise RegistryError(
            f"registry database is at schema revision {current!r}, unknown to this "
            f"orchestrator (it knows {sorted(known)})",
            where=_safe_url(url),
            fix="upgrade moonshine-orchestrator, or point the registry at another database",
        )
    return current


def _at_head(engine: Engine) -> bool:
    """Whether the database's schema is at HEAD_REVISION, read with SQLAlchemy alone."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        if not inspect(connection).has_table(ALEMBIC_VERSION.name):
            return False
        stored = connection.execute(select(ALEMBIC_VERSION.c.version_num)).scalars().all()
        connection.rollback()
    return stored == [HEAD_REVISION]


def _migrate(engine: Engine, url: str) -> None:
    """Bring the schema to alembic head, only if it is behind, under a lock: SQLite's write
    lock (BEGIN IMMEDIATE), PostgreSQL's transaction-scoped advisory lock. Whoever gets the
    lock second finds the schema at head and does nothing, so parallel workers opening one
    registry never race a migration. A revision this code does not know is refused."""
    if _at_head(engine):
        return
    from alembic import command

    _, head = _revisions()
    with engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        current = _current_revision(connection, url)
        connection.rollback()
    if current == head:
        return
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        if _current_revision(connection, url) != head:
            command.upgrade(_alembic_config(url, connection), "head")


def _beat() -> dict[str, Any]:
    """The liveness columns for "this process, now"."""
    return {"heartbeat_at": _now(), "host": socket.gethostname(), "pid": os.getpid()}


def _transient(exc: OperationalError) -> bool:
    """A conflict that running the same transaction again can resolve."""
    cause = exc.orig
    if getattr(cause, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    message = str(cause).lower()
    return "database is locked" in message or "database table is locked" in message or "database is busy" in message


def _upsert(session: Session, model: type[Base], key: tuple[Any, ...], **values: Any) -> None:
    """Insert the row with primary key `key`, or replace its other columns: one INSERT .. ON
    CONFLICT DO UPDATE on SQLite and PostgreSQL, a read then a write elsewhere."""
    from sqlalchemy.dialects import postgresql, sqlite  # not at the top: postgresql's costs a report 30 ms

    upsert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(session.get_bind().dialect.name)
    if upsert is not None:
        table = model.__table__
        statement = upsert(table).values(**values)
        keys = [c.name for c in table.primary_key.columns]
        session.execute(statement.on_conflict_do_update(
            index_elements=keys, set_={name: statement.excluded[name] for name in values if name not in keys}))
        return
    row = session.get(model, key)
    if row is None:
        session.add(model(**values))
    else:
        for name, value in values.items():
            setattr(row, name, value)


def _run_columns(lean: bool) -> list[Any]:
    """What a read of `runs` selects, in RUN_COLUMNS order. A lean one (`list_runs(lean=True)`)
    selects NULL for targets and data_stats, and the config only of runs in a sweep or running."""
    table = SqlRun.__table__
    # criteria as their JSON text, parsed once per distinct text (_to_run): runs share a few sets
    chosen = {"criteria": cast(table.c.criteria, Text)}
    if lean:
        # runs with per-utterance results: their config groups seeds, their data_stats name speakers
        judged = exists().where(SqlUtteranceResult.run_id == table.c.id)
        needs_config = or_(table.c.sweep_id.is_not(None), table.c.status == "running", judged)
        chosen.update(targets=null(), data_stats=case((judged, table.c.data_stats)),
                      config=case((needs_config, table.c.config)))
    return [chosen.get(name, table.c[name]) for name in RUN_COLUMNS]


def _orm_run(row: SqlRun) -> Run:
    """A Run from an ORM SqlRun, its children from its relationships."""
    return _to_run(_RUN_VALUES(row), map(_to_interval, row.intervals), map(_ARTIFACT_VALUES, row.artifacts),
                   map(_CHECK_VALUES, row.checks))


def _to_run(values: Sequence[Any], intervals: Iterable[Interval], artifacts: Iterable[Sequence[Any]],
            checks: Iterable[Sequence[Any]]) -> Run:
    """A Run from the values of its `runs` row (RUN_COLUMNS, in order: config, targets and
    data_stats None when not read, criteria parsed or as JSON text), its intervals, and its
    artifacts' and checks' values (ARTIFACT_COLUMNS, CHECK_COLUMNS)."""
    (run_id, experiment, status, config, config_hash, model_id, targets, target_summary, lr, steps, dora,
     git_commit, data_stats, started_at, ended_at, failure_reason, external, criteria, target_report,
     annotation_status, annotation_note, sweep_id, heartbeat_at, host, pid, stop_reason) = values
    return Run(
        id=run_id,
        experiment=experiment,
        status=status,
        config={} if config is None else config,
        config_hash=config_hash,
        model_id=model_id,
        targets=list(targets or ()),
        target_summary=target_summary,
        lr=lr,
        steps=steps,
        dora=dora,
        git_commit=git_commit,
        data_stats={} if data_stats is None else data_stats,
        started_at=_utc(started_at),
        ended_at=_utc(ended_at) if ended_at else None,
        failure_reason=failure_reason,
        intervals=tuple(intervals),
        artifacts=tuple(map(_to_artifact, artifacts)),
        checks=tuple(map(_to_check, checks)),
        external=bool(external),
        criteria=dict((_json(criteria) if isinstance(criteria, str) else criteria) or {}),  # a copy of its own
        target_report=target_report,
        annotation_status=annotation_status,
        annotation_note=annotation_note,
        sweep_id=sweep_id,
        heartbeat_at=_utc(heartbeat_at) if heartbeat_at else None,
        host=host,
        pid=pid,
        stop_reason=stop_reason,
    )


_RUN_ID = operator.itemgetter(0)  # of an artifact's or check's row read by Store._runs
_STARTED_AT = operator.attrgetter("started_at")
_RUN_VALUES, _ARTIFACT_VALUES, _CHECK_VALUES = (operator.attrgetter(*names) for names in
                                                (RUN_COLUMNS, ARTIFACT_COLUMNS, CHECK_COLUMNS))
_new_tuple = tuple.__new__
_json = functools.lru_cache(maxsize=64)(json.loads)  # shared parses: callers copy what they keep


def _to_interval(row: SqlInterval) -> Interval:
    return Interval(
        step=row.step,
        lr=row.lr,
        train_loss=row.train_loss,
        eval_loss=row.eval_loss,
        domain_wer=row.domain_wer,
        heldout_wer=row.heldout_wer,
        domain_utts=row.domain_utts,
        heldout_utts=row.heldout_utts,
        select_wer=row.select_wer,
        select_utts=row.select_utts,
        created_at=_utc(row.created_at),
    )


def _full_intervals(rows: Iterable[Sequence[Any]]) -> list[Interval]:  # Interval._fields
    return [Interval(*row[:-1], _utc(row[-1])) for row in rows]


def _judged_intervals(rows: Iterable[Sequence[Any]]) -> list[Interval]:  # JUDGED_FIELDS
    """Lean intervals, the fields not read None. tuple.__new__ builds each without calling the
    named tuple's own __new__, a Python function: 500,000 calls fewer for the report."""
    return [_new_tuple(Interval, (step, None, None, eval_loss, domain_wer, heldout_wer, None, None, select_wer,
                                  None, None))
            for step, eval_loss, domain_wer, heldout_wer, select_wer in rows]


def _to_artifact(values: Sequence[Any]) -> Artifact:  # ARTIFACT_COLUMNS
    kind, path, sha256, step, created_at = values
    return Artifact(kind=kind, path=path, sha256=sha256, step=step, created_at=_utc(created_at))


def _to_check(values: Sequence[Any]) -> Check:  # CHECK_COLUMNS
    name, passed, details, created_at = values
    return Check(name=name, passed=bool(passed), details=dict(details or {}), created_at=_utc(created_at))


def _to_utterance(row: SqlUtteranceResult) -> UtteranceRow:
    return UtteranceRow(
        step=row.step,
        split=row.split,
        idx=row.idx,
        audio_filepath=row.audio_filepath,
        reference=row.reference,
        hypothesis=row.hypothesis,
        errors=row.errors,
        ref_words=row.ref_words,
    )


def _utterance_rows(run_id: str, step: int, utterances: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The utterance_results rows to insert, built (and checked) before the transaction."""
    rows = []
    for split, items in utterances.items():
        _check_split(split)
        for idx, item in enumerate(items):
            try:
                values = {key: item[key] if isinstance(item, Mapping) else getattr(item, key)
                          for key in UTTERANCE_FIELDS}
            except (KeyError, AttributeError) as exc:
                raise RegistryError(f"utterance {idx} of {split!r} at step {step} lacks {exc}",
                                    fix=f"give each utterance {', '.join(UTTERANCE_FIELDS)}") from None
            values.update(errors=int(values["errors"]), ref_words=int(values["ref_words"]),
                          audio_filepath=str(values["audio_filepath"]))
            rows.append(dict(run_id=run_id, step=step, split=split, idx=idx, **values))
    return rows


WER_FIELDS = ("domain_wer", "heldout_wer", "select_wer")


def check_wers(values: Mapping[str, Any], *, where: str) -> None:
    """Refuse a WER that is not a finite number >= 0 (NaN, inf, negative): the judge would
    otherwise skip or select it. (A WER above 1 is possible: insertions.)"""
    for name in WER_FIELDS:
        value = values.get(name)
        if value is None:
            continue
        try:
            ok = math.isfinite(value) and value >= 0
        except TypeError:
            ok = False
        if not ok:
            raise RegistryError(f"{name} {value!r} at {where} is not a finite number >= 0",
                                fix="record WERs as fractions (0.1234 for 12.34 %); a failed evaluation is no WER")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise RegistryError(f"unknown evaluation split {split!r}", fix=f"use one of {', '.join(SPLITS)}")


def _check_annotation(status: str) -> None:
    if not ANNOTATION.fullmatch(status):
        raise RegistryError(
            f"annotation status {status!r} is not a short lower-case word",
            fix="use e.g. flawed, failed, passed or superseded (a-z, 0-9, - or _, up to 32)",
        )


def _new_id(experiment: str, moment: datetime) -> str:
    return f"{experiment}-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


_EPOCH, _EPOCH_UTC = datetime(1970, 1, 1), datetime(1970, 1, 1, tzinfo=timezone.utc)


def _utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored as UTC. (The same instant as
    `moment.replace(tzinfo=timezone.utc)`, by exact arithmetic that costs a twentieth of it:
    a report converts 50,000.)"""
    return moment if moment.tzinfo else _EPOCH_UTC + (moment - _EPOCH)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return url


def _open_fix(url: str) -> str:
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return "use a SQLAlchemy URL such as sqlite:///registry.db"
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            return f"create the directory {folder}, or point the registry URL at a writable path"
        return f"make {parsed.database} and {folder} writable, or point the registry URL elsewhere"
    return "check that the database server is reachable and its driver is installed"
