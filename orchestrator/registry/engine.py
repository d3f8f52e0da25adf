"""Opening a registry database: the engine, SQLite's pragmas and write locking, and the schema
kept at alembic head (migrated only when behind, under a lock). Used by `Store` alone."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, column, create_engine, event, func, inspect, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from orchestrator.errors import RegistryError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions/ (tests/test_report_scale.py checks it is alembic's
# head): a database already there opens without importing alembic, a fifth of a report's start.
HEAD_REVISION = "0007"
ALEMBIC_VERSION = table("alembic_version", column("version_num"))
# WAL with synchronous=NORMAL: a commit survives any crash of the writing process (the WAL is in
# the OS page cache) and the database stays consistent after a power loss, which may drop the
# last commits; commits then cost no fsync, so parallel writers are not serialised on the disk.
SQLITE_PRAGMAS = ("busy_timeout = 30000", "foreign_keys = ON", "journal_mode = WAL", "synchronous = NORMAL")
READ_ONLY = "orchestrator_read_only"  # execution option: a SQLite transaction that takes no write lock
TRANSIENT_SQLSTATES = ("40001", "40P01")  # PostgreSQL: serialization failure, deadlock detected
MIGRATION_LOCK = 0x6D6F6F6E73686E65  # PostgreSQL advisory lock held while migrating ("moonshne")


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
            where=safe_url(url),
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


def _transient(exc: OperationalError) -> bool:
    """A conflict that running the same transaction again can resolve."""
    cause = exc.orig
    if getattr(cause, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    message = str(cause).lower()
    return "database is locked" in message or "database table is locked" in message or "database is busy" in message


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages (as given when it does not parse)."""
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
