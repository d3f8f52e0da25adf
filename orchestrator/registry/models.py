"""SQLAlchemy tables of the run registry: runs, their intervals, the per-utterance results of
each interval's evaluation, artifacts, and checks (e.g. parity) run on a finished run.

Only `store.py` uses these classes. A change here needs a new alembic migration in
`migrations/versions/`; `tests/test_registry.py` checks that the two agree.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (JSON, DateTime, ForeignKey, ForeignKeyConstraint, Index, Integer, MetaData, String, Text,
                        false)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SqlRun(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    experiment: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[str] = mapped_column(String(255))
    targets: Mapped[list[str]] = mapped_column(JSON)
    target_summary: Mapped[str] = mapped_column(Text)
    lr: Mapped[float]
    steps: Mapped[int]
    dora: Mapped[bool]
    git_commit: Mapped[str | None] = mapped_column(String(64))
    data_stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # 0002: runs made outside the tool, criteria and target resolution versioned with the run,
    # a human judgment that overrides the derived status, and the sweep a run belongs to.
    external: Mapped[bool] = mapped_column(default=False, server_default=false())
    criteria: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    target_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    annotation_status: Mapped[str | None] = mapped_column(String(32))
    annotation_note: Mapped[str | None] = mapped_column(Text)
    sweep_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # 0003: liveness. The process training the run (host, pid) and when it last showed progress;
    # a `running` run whose process is gone is read as interrupted (see orchestrator/liveness.py).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    stop_reason: Mapped[str | None] = mapped_column(Text)  # why it ended before optim.steps (0004)
    # 0005: what it cost (training/telemetry.py): where and how it computed, peak memory, speed
    device: Mapped[str | None] = mapped_column(String(255))
    precision: Mapped[str | None] = mapped_column(String(16))
    peak_memory_mb: Mapped[float | None]
    train_utts_per_s: Mapped[float | None]
    eval_realtime_x: Mapped[float | None]
    # ... and where a live run is: its last step and training loss, what it is doing (`watch`)
    progress_step: Mapped[int | None]
    progress_loss: Mapped[float | None]
    progress_phase: Mapped[str | None] = mapped_column(String(64))
    progress_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # its forecast (0007)
    # 0007: how many times an interval of it was written (inserted or replaced), in the same
    # transaction: what tells the report's digest (Store.report_runs) that its intervals changed
    interval_writes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    intervals: Mapped[list[SqlInterval]] = relationship(
        order_by="SqlInterval.step", cascade="all, delete-orphan", passive_deletes=True
    )
    artifacts: Mapped[list[SqlArtifact]] = relationship(
        order_by="SqlArtifact.kind", cascade="all, delete-orphan", passive_deletes=True
    )
    checks: Mapped[list[SqlCheck]] = relationship(
        order_by="SqlCheck.name", cascade="all, delete-orphan", passive_deletes=True
    )


class SqlInterval(Base):
    __tablename__ = "intervals"
    # 0006: the report's per-run digest (count, last step, latest created_at) reads this index alone
    __table_args__ = (Index("ix_intervals_run_step_created", "run_id", "step", "created_at"),)

    run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(primary_key=True)
    lr: Mapped[float | None]
    train_loss: Mapped[float | None]
    eval_loss: Mapped[float | None]
    domain_wer: Mapped[float | None]
    heldout_wer: Mapped[float | None]
    domain_utts: Mapped[int | None]
    heldout_utts: Mapped[int | None]
    select_wer: Mapped[float | None]  # eval.select_manifest (0004)
    select_utts: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SqlArtifact(Base):
    __tablename__ = "artifacts"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    step: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SqlUtteranceResult(Base):
    """One utterance of one evaluation: split is "domain" or "heldout", idx its manifest order.
    Rows belong to their interval (deleted with it, and with the run)."""

    __tablename__ = "utterance_results"
    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "step"], ["intervals.run_id", "intervals.step"], ondelete="CASCADE"
        ),
    )

    run_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    split: Mapped[str] = mapped_column(String(16), primary_key=True)
    idx: Mapped[int] = mapped_column(primary_key=True)
    audio_filepath: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    hypothesis: Mapped[str] = mapped_column(Text)
    errors: Mapped[int]
    ref_words: Mapped[int]


class SqlCheck(Base):
    """The outcome of a named check run on a run (e.g. "parity"), one per name."""

    __tablename__ = "checks"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    passed: Mapped[bool]
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def is_registry_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """alembic's `include_object`: only the registry's own tables. A database may also hold the
    tables of an Optuna study (`orchestrator tune` keeps its study there), which autogenerate
    would otherwise report as tables to drop."""
    if type_ == "table":
        return name in Base.metadata.tables
    table = getattr(obj, "table", None)
    return table is None or table.name in Base.metadata.tables
