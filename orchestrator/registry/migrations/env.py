"""Alembic environment for the run registry.

`Store` runs migrations on its own connection (passed in `config.attributes["connection"]`)
so SQLite pragmas and in-memory databases behave; otherwise `sqlalchemy.url` is used.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from orchestrator.registry.models import Base, is_registry_object

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=Base.metadata, render_as_batch=True,
        include_object=is_registry_object,  # not Optuna's tables (a tune study shares the database)
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        render_as_batch=True,
        literal_binds=True,
        include_object=is_registry_object,
    )
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    _run(shared)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()
