"""When a live run expects to end (runs.progress_ends_at, `orchestrator watch`'s ETA), and how many
times its intervals were written (runs.interval_writes, the report's digest of them).

The trainer forecasts it at every progress write from its own measured pace (training/pace.py:
seconds per training step, and each evaluation set's last evaluation time, times what is left of
the schedule), so the ETA of a run whose evaluations come late in its schedule is not its
training pace alone.

interval_writes counts every insert or replacement of one of the run's intervals, bumped by
Store.add_interval in the interval's own transaction: `orchestrator report` digests a run by its
row, so a changed interval changes the run's digest without the GROUP BY over every interval it
ran before (0.13-0.16 s of a 10,000-run x 50-interval report; 0006's index served it).

Adds two columns (plain ADD COLUMN, every row kept). progress_ends_at stays empty for runs recorded
before this revision (`watch` then estimates from the run's steps per second, as before);
interval_writes starts at each run's interval count (any later write adds to it).

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
    """Add runs.progress_ends_at and runs.interval_writes (each run's interval count)."""
    op.add_column("runs", sa.Column("progress_ends_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("runs", sa.Column("interval_writes", sa.Integer(), nullable=False, server_default="0"))
    runs = sa.table("runs", sa.column("id"), sa.column("interval_writes"))
    intervals = sa.table("intervals", sa.column("run_id"))
    count = sa.select(sa.func.count()).where(intervals.c.run_id == runs.c.id).scalar_subquery()
    op.execute(sa.update(runs).values(interval_writes=count))


def downgrade() -> None:
    """Drop them (SQLite copies the table: run it with foreign keys off, see 0002)."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("interval_writes")
        batch.drop_column("progress_ends_at")
