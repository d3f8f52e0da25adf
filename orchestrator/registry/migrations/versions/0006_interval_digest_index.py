"""A covering index for the report's per-run digest of intervals.

`orchestrator report` digests each run by its intervals' count, last step and latest created_at
(Store.report_runs: one GROUP BY over every interval, no interval row fetched). Without an index
holding created_at, SQLite reads the whole intervals table for it (0.26 s of a 10,000-run x
50-interval report); with (run_id, step, created_at) it scans the index alone (0.14 s).

Adds one index, no column; every row kept.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

NAME = "ix_intervals_run_step_created"


def upgrade() -> None:
    """Create the index on intervals (run_id, step, created_at)."""
    op.create_index(NAME, "intervals", ["run_id", "step", "created_at"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index(NAME, table_name="intervals")
