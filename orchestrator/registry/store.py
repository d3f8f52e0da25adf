"""The run registry: the only code that touches the database. It returns plain entities.

Modelled on MLflow's SqlAlchemyStore: one managed-session helper, SQLite pragmas set on
connect, and the schema owned by alembic (`upgrade head` on open; a database at a revision
this code does not know is refused).
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from orchestrator.errors import RegistryError
from orchestrator.registry.entities import Artifact, Check, Interval, Run, UtteranceRow
from orchestrator.registry.models import (Base, SqlArtifact, SqlCheck, SqlInterval, SqlRun,
                                          SqlUtteranceResult)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_PRAGMAS = ("busy_timeout = 30000", "foreign_keys = ON", "journal_mode = WAL")
SPLITS = ("domain", "heldout")
UTTERANCE_FIELDS = ("audio_filepath", "reference", "hypothesis", "errors", "ref_words")
ANNOTATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")


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
    def _session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

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
        row = SqlRun(
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
        )
        with self._new_run(run_id) as session:
            session.add(row)
            session.flush()
            return _to_run(row)

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
        fields = set(Interval.__dataclass_fields__) - {"created_at"}
        for values in intervals:
            if "step" not in values or set(values) - fields:
                raise RegistryError(f"interval {dict(values)} needs a step and only the fields "
                                    f"{', '.join(sorted(fields))}", fix="e.g. {'step': 600, 'domain_wer': 0.1264}")
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
        row = SqlRun(
            id=run_id, experiment=experiment, status="completed", config=config,
            config_hash=hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
            model_id=model_id, targets=[], target_summary=target_summary, lr=lr, steps=steps,
            dora=dora, git_commit=None, data_stats={}, started_at=now, ended_at=now,
            external=True, criteria=criteria, annotation_status=annotation_status,
            annotation_note=annotation_note,
        )
        with self._new_run(run_id) as session:
            session.add(row)
            session.flush()
            session.add_all(SqlInterval(run_id=run_id, created_at=now, **values) for values in intervals)
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
        utterances: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        """Record the metrics at `step`, committed at once; a second call for the same
        step replaces the whole row (fields left out become NULL).

        `utterances` maps a split ("domain", "heldout") to what its evaluation produced per
        utterance, in manifest order: `evaluate.UtteranceResult`s or dicts with the keys
        audio_filepath, reference, hypothesis, errors, ref_words. They are written in the
        same transaction as the interval and replace that split's earlier rows for `step`;
        a split left out keeps its rows."""
        rows = _utterance_rows(run_id, step, utterances or {})
        values = dict(
            lr=lr,
            train_loss=train_loss,
            eval_loss=eval_loss,
            domain_wer=domain_wer,
            heldout_wer=heldout_wer,
            domain_utts=domain_utts,
            heldout_utts=heldout_utts,
            created_at=_now(),
        )
        with self._session() as session:
            self._require(session, run_id)
            _upsert(session, SqlInterval, (run_id, step), run_id=run_id, step=step, **values)
            session.flush()  # the interval row exists before its utterances reference it
            for split in utterances or {}:
                session.execute(delete(SqlUtteranceResult).where(
                    SqlUtteranceResult.run_id == run_id, SqlUtteranceResult.step == step,
                    SqlUtteranceResult.split == split))
            if rows:
                session.execute(insert(SqlUtteranceResult), rows)

    def utterances(self, run_id: str, step: int, split: str) -> list[UtteranceRow]:
        """The per-utterance results of `split` at `step`, in manifest order ([] if none)."""
        _check_split(split)
        query = (
            select(SqlUtteranceResult)
            .where(SqlUtteranceResult.run_id == run_id, SqlUtteranceResult.step == step,
                   SqlUtteranceResult.split == split)
            .order_by(SqlUtteranceResult.idx)
        )
        with self._session() as session:
            return [_to_utterance(row) for row in session.scalars(query)]

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
        with self._session() as session:
            pairs = session.execute(query).all()
        table = np.array(pairs, dtype=np.int64).reshape(len(pairs), 2)
        return table[:, 0].copy(), table[:, 1].copy()

    def add_check(self, run_id: str, name: str, passed: bool, details: dict[str, Any] | None = None) -> None:
        """Record the outcome of check `name` (e.g. "parity") on a run, replacing an earlier one."""
        with self._session() as session:
            self._require(session, run_id)
            values = dict(passed=bool(passed), details=details or {}, created_at=_now())
            _upsert(session, SqlCheck, (run_id, name), run_id=run_id, name=name, **values)

    def annotate(self, run_id: str, status: str | None, note: str | None = None) -> None:
        """Record a person's judgment of a run (e.g. "flawed" and why); it overrides the
        derived status in the report. `status=None` removes the annotation."""
        if status is not None:
            _check_annotation(status)
        with self._session() as session:
            row = self._require(session, run_id)
            row.annotation_status = status
            row.annotation_note = note if status is not None else None

    def add_artifact(
        self, run_id: str, *, kind: str, path: str, sha256: str, step: int | None = None
    ) -> None:
        """Record the file of `kind` a run produced, replacing an earlier one of that kind."""
        with self._session() as session:
            self._require(session, run_id)
            values = dict(path=path, sha256=sha256, step=step, created_at=_now())
            _upsert(session, SqlArtifact, (run_id, kind), run_id=run_id, kind=kind, **values)

    def finish_run(self, run_id: str, status: str, reason: str | None = None) -> None:
        """Close a run with its final status (e.g. "finished", "failed") and why."""
        with self._session() as session:
            row = self._require(session, run_id)
            row.status, row.failure_reason, row.ended_at = status, reason, _now()

    def reopen(self, run_id: str) -> None:
        """Mark a run `running` again (it is being resumed): clears its end time and failure."""
        with self._session() as session:
            row = self._require(session, run_id)
            row.status, row.failure_reason, row.ended_at = "running", None, None

    def runs_with_hash(self, config_hash: str) -> list[Run]:
        """Runs made by this tool (not external) with this identity hash, oldest first."""
        return self._runs(SqlRun.config_hash == config_hash, SqlRun.external.is_(False))

    def get_run(self, run_id: str) -> Run:
        """The run with its intervals and artifacts; RegistryError if there is none."""
        with self._session() as session:
            return _to_run(self._require(session, run_id))

    def list_runs(self) -> list[Run]:
        """All runs, oldest first, with their intervals, artifacts and checks (not the
        per-utterance results: read those with `utterance_errors` / `utterances`)."""
        return self._runs()

    def _runs(self, *where: Any) -> list[Run]:
        query = (
            select(SqlRun)
            .where(*where)
            .options(selectinload(SqlRun.intervals), selectinload(SqlRun.artifacts),
                     selectinload(SqlRun.checks))
            .order_by(SqlRun.started_at, SqlRun.id)
        )
        with self._session() as session:
            return [_to_run(row) for row in session.scalars(query)]

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    @contextmanager
    def _new_run(self, run_id: str) -> Iterator[Session]:
        """A transaction that inserts run `run_id`; an existing id is a RegistryError."""
        try:
            with self._session() as session:
                yield session
        except IntegrityError as exc:
            if not any(name in str(exc.orig) for name in ("runs.id", "pk_runs")):
                raise
            raise RegistryError(
                f"run {run_id!r} already exists", where=_safe_url(self.url), fix="use a new run id"
            ) from None

    def _require(self, session: Session, run_id: str) -> SqlRun:
        row = session.get(SqlRun, run_id)
        if row is None:
            raise RegistryError(
                f"no run {run_id!r} in the registry",
                where=_safe_url(self.url),
                fix="see `orchestrator runs`",
            )
        return row


def _open(url: str) -> Engine:
    """An engine whose database is at alembic head; nothing left open if that fails."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    try:
        with engine.begin() as connection:
            _migrate(connection, url)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """Per-connection pragmas, and BEGIN IMMEDIATE so every transaction (migrations
    included) takes the write lock up front: parallel runs wait (busy_timeout) instead
    of failing when they upgrade a read to a write, and DDL is transactional."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _migrate(connection: Connection, url: str) -> None:
    """Bring the schema to alembic head; refuse a revision this code does not know."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None and current not in known:
        raise RegistryError(
            f"registry database is at schema revision {current!r}, unknown to this "
            f"orchestrator (it knows {sorted(known)})",
            where=_safe_url(url),
            fix="upgrade moonshine-orchestrator, or point the registry at another database",
        )
    command.upgrade(config, "head")


def _upsert(session: Session, model: type[Base], key: tuple[Any, ...], **values: Any) -> None:
    row = session.get(model, key)
    if row is None:
        session.add(model(**values))
    else:
        for name, value in values.items():
            setattr(row, name, value)


def _to_run(row: SqlRun) -> Run:
    return Run(
        id=row.id,
        experiment=row.experiment,
        status=row.status,
        config=row.config,
        config_hash=row.config_hash,
        model_id=row.model_id,
        targets=list(row.targets),
        target_summary=row.target_summary,
        lr=row.lr,
        steps=row.steps,
        dora=row.dora,
        git_commit=row.git_commit,
        data_stats=row.data_stats,
        started_at=_utc(row.started_at),
        ended_at=_utc(row.ended_at) if row.ended_at else None,
        failure_reason=row.failure_reason,
        intervals=tuple(_to_interval(i) for i in row.intervals),
        artifacts=tuple(_to_artifact(a) for a in row.artifacts),
        checks=tuple(_to_check(c) for c in row.checks),
        external=bool(row.external),
        criteria=dict(row.criteria or {}),
        target_report=row.target_report,
        annotation_status=row.annotation_status,
        annotation_note=row.annotation_note,
        sweep_id=row.sweep_id,
    )


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
        created_at=_utc(row.created_at),
    )


def _to_artifact(row: SqlArtifact) -> Artifact:
    return Artifact(
        kind=row.kind,
        path=row.path,
        sha256=row.sha256,
        step=row.step,
        created_at=_utc(row.created_at),
    )


def _to_check(row: SqlCheck) -> Check:
    return Check(name=row.name, passed=bool(row.passed), details=dict(row.details or {}),
                 created_at=_utc(row.created_at))


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


def _utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


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
