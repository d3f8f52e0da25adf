"""The run registry: the only code that touches the database. It returns plain entities.

Modelled on MLflow's SqlAlchemyStore: one managed-session helper, SQLite pragmas set on
connect, and the schema owned by alembic (`upgrade head` on open; a database at a revision
this code does not know is refused).
"""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from orchestrator.errors import RegistryError
from orchestrator.registry.entities import Artifact, Interval, Run
from orchestrator.registry.models import Base, SqlArtifact, SqlInterval, SqlRun

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_PRAGMAS = ("busy_timeout = 30000", "foreign_keys = ON", "journal_mode = WAL")


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
    ) -> Run:
        """Record a new run with status "running" and return it."""
        started_at = _now()
        run_id = run_id or f"{experiment}-{started_at:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
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
        )
        try:
            with self._session() as session:
                session.add(row)
                session.flush()
                return _to_run(row)
        except IntegrityError:
            raise RegistryError(
                f"run {run_id!r} already exists", where=_safe_url(self.url), fix="use a new run id"
            ) from None

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
    ) -> None:
        """Record the metrics at `step`, committed at once; a second call for the same
        step replaces the whole row (fields left out become NULL)."""
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

    def get_run(self, run_id: str) -> Run:
        """The run with its intervals and artifacts; RegistryError if there is none."""
        with self._session() as session:
            return _to_run(self._require(session, run_id))

    def list_runs(self) -> list[Run]:
        """All runs, oldest first, with their intervals and artifacts."""
        query = (
            select(SqlRun)
            .options(selectinload(SqlRun.intervals), selectinload(SqlRun.artifacts))
            .order_by(SqlRun.started_at, SqlRun.id)
        )
        with self._session() as session:
            return [_to_run(row) for row in session.scalars(query)]

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

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
