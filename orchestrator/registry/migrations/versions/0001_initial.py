"""Initial schema: runs, intervals, artifacts.

Revision ID: 0001
Revises:
Create Date: 2025-11-21
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the three registry tables."""
    op.create_table(
        "runs",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("experiment", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("target_summary", sa.Text(), nullable=False),
        sa.Column("lr", sa.Double(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("dora", sa.Boolean(), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("data_stats", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_experiment", "runs", ["experiment"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_table(
        "intervals",
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("lr", sa.Double(), nullable=True),
        sa.Column("train_loss", sa.Double(), nullable=True),
        sa.Column("eval_loss", sa.Double(), nullable=True),
        sa.Column("domain_wer", sa.Double(), nullable=True),
        sa.Column("heldout_wer", sa.Double(), nullable=True),
        sa.Column("domain_utts", sa.Integer(), nullable=True),
        sa.Column("heldout_utts", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_intervals_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "step", name="pk_intervals"),
    )
    op.create_table(
        "artifacts",
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_artifacts_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "kind", name="pk_artifacts"),
    )


def downgrade() -> None:
    """Drop the three registry tables."""
    op.drop_table("artifacts")
    op.drop_table("intervals")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_index("ix_runs_experiment", table_name="runs")
    op.drop_table("runs")
