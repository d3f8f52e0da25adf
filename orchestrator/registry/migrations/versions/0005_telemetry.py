"""What a run cost: the device and precision it ran in, its peak memory, training throughput and
evaluation speed (training/telemetry.py says how each is measured); and where a live run is
(its last step and loss, and what it is doing), for `orchestrator watch`.

Adds only nullable columns (plain ADD COLUMN, every row kept): runs.device, runs.precision,
runs.peak_memory_mb, runs.train_utts_per_s, runs.eval_realtime_x, runs.progress_step,
runs.progress_loss, runs.progress_phase. Runs recorded before this revision (and `orchestrator
record`ed ones) leave them empty.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = (("device", sa.String(255)), ("precision", sa.String(16)), ("peak_memory_mb", sa.Double()),
           ("train_utts_per_s", sa.Double()), ("eval_realtime_x", sa.Double()), ("progress_step", sa.Integer()),
           ("progress_loss", sa.Double()), ("progress_phase", sa.String(64)))


def upgrade() -> None:
    """Add the telemetry columns of runs."""
    for name, type_ in COLUMNS:
        op.add_column("runs", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    """Drop them (SQLite copies the table: run it with foreign keys off, see 0002)."""
    with op.batch_alter_table("runs") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
