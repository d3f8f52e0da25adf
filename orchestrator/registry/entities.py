"""Plain, frozen records the registry store returns; database rows never leave the store."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Interval:
    """Metrics recorded at one evaluation step. WERs are fractions (0.1234 means 12.34 %)."""

    step: int
    lr: float | None
    train_loss: float | None
    eval_loss: float | None
    domain_wer: float | None
    heldout_wer: float | None
    domain_utts: int | None
    heldout_utts: int | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The metric fields as a JSON-serialisable dict (no timestamp)."""
        return {
            "step": self.step,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "eval_loss": self.eval_loss,
            "domain_wer": self.domain_wer,
            "heldout_wer": self.heldout_wer,
            "domain_utts": self.domain_utts,
            "heldout_utts": self.heldout_utts,
        }


@dataclass(frozen=True)
class Artifact:
    """A file a run produced (adapter weights, merged model, ...), one per kind."""

    kind: str
    path: str
    sha256: str
    step: int | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (timestamp as an ISO string)."""
        return {
            "kind": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "step": self.step,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Run:
    """One fine-tuning run with its intervals (ordered by step) and artifacts."""

    id: str
    experiment: str
    status: str
    config: dict[str, Any]
    config_hash: str
    model_id: str
    targets: list[str]
    target_summary: str
    lr: float
    steps: int
    dora: bool
    git_commit: str | None
    data_stats: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
    failure_reason: str | None
    intervals: tuple[Interval, ...] = ()
    artifacts: tuple[Artifact, ...] = ()

    @property
    def baseline(self) -> Interval | None:
        """The interval at step 0 (the model before training), if it was evaluated."""
        return next((i for i in self.intervals if i.step == 0), None)

    @property
    def final(self) -> Interval | None:
        """The last recorded interval."""
        return self.intervals[-1] if self.intervals else None

    @property
    def best(self) -> Interval | None:
        """The interval with the lowest domain WER; ties go to the earliest step."""
        scored = [i for i in self.intervals if i.domain_wer is not None]
        return min(scored, key=lambda i: (i.domain_wer, i.step), default=None)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: datetimes as ISO strings, intervals/artifacts as lists."""
        return {
            "id": self.id,
            "experiment": self.experiment,
            "status": self.status,
            "config": self.config,
            "config_hash": self.config_hash,
            "model_id": self.model_id,
            "targets": list(self.targets),
            "target_summary": self.target_summary,
            "lr": self.lr,
            "steps": self.steps,
            "dora": self.dora,
            "git_commit": self.git_commit,
            "data_stats": self.data_stats,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "failure_reason": self.failure_reason,
            "intervals": [i.as_dict() for i in self.intervals],
            "artifacts": [a.as_dict() for a in self.artifacts],
        }
