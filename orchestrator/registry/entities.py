"""Plain, frozen records the registry store returns; database rows never leave the store."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from datetime import datetime
from typing import Any, NamedTuple


class RunStatus(str, Enum):
    """A run's recorded lifecycle status. A str: it compares equal to (and is stored as) its value."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C, or (derived by liveness, never written) a dead process
    PRUNED = "pruned"  # stopped early by an `on_interval` hook (a tune trial); see Run.stop_reason

    def __str__(self) -> str:
        return self.value


class Interval(NamedTuple):
    """Metrics recorded at one evaluation step. WERs are fractions (0.1234 means 12.34 %).

    A named tuple, not a dataclass: a registry of 10,000 runs holds 500,000 of them, and a
    tuple is built several times faster. `Store.list_runs(lean=True)` (what the
    report reads) fills only step, eval_loss, domain_wer and heldout_wer; the others are None."""

    step: int
    lr: float | None
    train_loss: float | None
    eval_loss: float | None
    domain_wer: float | None
    heldout_wer: float | None
    domain_utts: int | None
    heldout_utts: int | None
    select_wer: float | None = None  # on eval.select_manifest, when the run has one
    select_utts: int | None = None
    created_at: datetime | None = None  # None when read by list_runs(lean=True)

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
            "select_wer": self.select_wer,
            "select_utts": self.select_utts,
        }


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of a named check run on a run (e.g. "parity"), with what it measured."""

    name: str
    passed: bool
    details: dict[str, Any]
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "details": self.details,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class UtteranceRow:
    """What one evaluation produced for one utterance (texts normalised, as scored)."""

    step: int
    split: str  # "domain" | "heldout"
    idx: int  # position in the evaluated manifest
    audio_filepath: str
    reference: str
    hypothesis: str
    errors: int  # substitutions + deletions + insertions
    ref_words: int


@dataclass(frozen=True, slots=True)
class Run:
    """One fine-tuning run with its intervals (ordered by step) and artifacts.

    Read by `Store.list_runs(lean=True)` (the report), `targets` and `data_stats` are empty and
    so is `config` unless the run is in a sweep or `running`; see also Interval."""

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
    checks: tuple[Check, ...] = ()
    external: bool = False  # entered with `orchestrator record`: no per-utterance data, no artifacts
    criteria: dict[str, Any] = field(default_factory=dict)  # thresholds it is judged by; {} = defaults
    target_report: dict[str, Any] | None = None  # target resolution: by_component, skipped, ...
    annotation_status: str | None = None  # a person's judgment; overrides the derived status
    annotation_note: str | None = None
    sweep_id: str | None = None
    heartbeat_at: datetime | None = None  # last sign of progress from the training process
    host: str | None = None  # where that process runs (hostname) and its pid
    pid: int | None = None
    stop_reason: str | None = None  # why it ended before optim.steps (early stopping, pruned)
    device: str | None = None  # where it computed, e.g. "cuda (NVIDIA H100 80GB HBM3)" (training/telemetry.py)
    precision: str | None = None  # fp32 | bf16 | fp16
    peak_memory_mb: float | None = None  # CUDA peak allocated, else the process's peak RSS
    train_utts_per_s: float | None = None  # training utterances per second of step time
    eval_realtime_x: float | None = None  # seconds of audio evaluated per second of wall time
    progress_step: int | None = None  # the last step the trainer reported (`orchestrator watch`)
    progress_loss: float | None = None  # its training loss
    progress_phase: str | None = None  # what it was doing then: "train", "eval domain @100", ...
    progress_ends_at: datetime | None = None  # when it expected then to end (training/pace.py)

    def artifact(self, kind: str) -> Artifact | None:
        """The artifact of `kind` (e.g. "lora_adapter_best"), if the run recorded one."""
        for a in self.artifacts:  # a loop, not next(generator): the report asks 10,000 runs
            if a.kind == kind:
                return a
        return None

    def check(self, name: str) -> Check | None:
        """The check called `name` (e.g. "parity"), if it was run."""
        for c in self.checks:
            if c.name == name:
                return c
        return None

    @property
    def baseline(self) -> Interval | None:
        """The interval at step 0 (the model before training), if it was evaluated."""
        intervals = self.intervals
        if intervals and intervals[0].step == 0:  # where it is (intervals go by step), without a scan
            return intervals[0]
        return next((i for i in intervals if i.step == 0), None)

    @property
    def final(self) -> Interval | None:
        """The last recorded interval."""
        return self.intervals[-1] if self.intervals else None

    @property
    def best(self) -> Interval | None:
        """The interval with the lowest domain WER, ties to the earliest step, with no heldout
        guard. The tuned checkpoint the verdicts and report use is `verdicts.select_best`."""
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
            "checks": [c.as_dict() for c in self.checks],
            "external": self.external,
            "criteria": self.criteria,
            "target_report": self.target_report,
            "annotation_status": self.annotation_status,
            "annotation_note": self.annotation_note,
            "sweep_id": self.sweep_id,
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
            "host": self.host,
            "pid": self.pid,
            "stop_reason": self.stop_reason,
            "device": self.device,
            "precision": self.precision,
            "peak_memory_mb": self.peak_memory_mb,
            "train_utts_per_s": self.train_utts_per_s,
            "eval_realtime_x": self.eval_realtime_x,
            "progress_step": self.progress_step,
            "progress_loss": self.progress_loss,
            "progress_phase": self.progress_phase,
            "progress_ends_at": self.progress_ends_at.isoformat() if self.progress_ends_at else None,
        }
