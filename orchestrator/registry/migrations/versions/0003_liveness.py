"""Liveness: when a run last showed progress, and which process (host, pid) trains it.

Adds only nullable columns on `runs` (plain ADD COLUMN, every row kept); runs recorded before
0003 have no heartbeat and are judged by their start time and lock file.

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-05
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add runs.heartbeat_at, runs.host and runs.pid."""
    op.add_column("runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("runs", sa.Column("host", sa.String(255), nullable=True))
    op.add_column("runs", sa.Column("pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop the liveness columns (SQLite copies `runs`: run it with foreign keys off, see 0002)."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("pid")
        batch.drop_column("host")
        batch.drop_column("heartbeat_at")
