"""Why a run ended early, and the selection (dev) manifest's WER at each interval.

Adds only nullable columns (plain ADD COLUMN, every row kept): runs.stop_reason (early stopping,
a pruned tune trial), intervals.select_wer and intervals.select_utts (eval.select_manifest, the
set that picks the tuned interval when it is not the set that reports it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add runs.stop_reason, intervals.select_wer and intervals.select_utts."""
    op.add_column("runs", sa.Column("stop_reason", sa.Text(), nullable=True))
    op.add_column("intervals", sa.Column("select_wer", sa.Double(), nullable=True))
    op.add_column("intervals", sa.Column("select_utts", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them (SQLite copies the tables: run it with foreign keys off, see 0002)."""
    with op.batch_alter_table("intervals") as batch:
        batch.drop_column("select_utts")
        batch.drop_column("select_wer")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stop_reason")
