"""When a live run expects to end: runs.progress_ends_at, for `orchestrator watch`'s ETA.

The trainer forecasts it at every progress write from its own measured pace (training/pace.py:
seconds per training step, and each evaluation set's last evaluation time, times what is left of
the schedule), so the ETA of a run whose evaluations come late in its schedule is not its
training pace alone.

Adds one nullable column (plain ADD COLUMN, every row kept). Runs recorded before this revision
leave it empty; `watch` then estimates from the run's steps per second, as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add runs.progress_ends_at."""
    op.add_column("runs", sa.Column("progress_ends_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop it (SQLite copies the table: run it with foreign keys off, see 0002)."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("progress_ends_at")
