"""Verdicts: per-utterance results, checks, and run fields for criteria, annotation, external runs.

Adds only: two tables and nullable (or defaulted) columns on `runs`, so an 0001 database is
upgraded in place with every row kept.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-28
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the run columns, then the utterance_results and checks tables."""
    # Plain ALTER TABLE ADD COLUMN, never a batch copy: recreating `runs` under SQLite's
    # foreign_keys=ON would cascade-delete every interval.
    op.add_column(
        "runs", sa.Column("external", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("runs", sa.Column("criteria", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("target_report", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("annotation_status", sa.String(32), nullable=True))
    op.add_column("runs", sa.Column("annotation_note", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("sweep_id", sa.String(255), nullable=True))
    op.create_index("ix_runs_sweep_id", "runs", ["sweep_id"])
    op.create_table(
        "utterance_results",
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("audio_filepath", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("hypothesis", sa.Text(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("ref_words", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "step"],
            ["intervals.run_id", "intervals.step"],
            name="fk_utterance_results_run_id_intervals",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "step", "split", "idx", name="pk_utterance_results"),
    )
    op.create_table(
        "checks",
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_checks_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "name", name="pk_checks"),
    )


def downgrade() -> None:
    """Drop what 0002 added (the per-utterance results, checks and run fields are lost).

    SQLite drops the columns by copying `runs`; run it with foreign keys off (a plain
    `alembic downgrade`, not the Store's connection) or the copy cascades to the intervals."""
    op.drop_table("checks")
    op.drop_table("utterance_results")
    op.drop_index("ix_runs_sweep_id", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("sweep_id")
        batch.drop_column("annotation_note")
        batch.drop_column("annotation_status")
        batch.drop_column("target_report")
        batch.drop_column("criteria")
        batch.drop_column("external")
