"""The run registry: the only code that touches the database. It returns plain entities.

Modelled on MLflow's SqlAlchemyStore: one managed-session helper, SQLite pragmas set on
connect, and the schema owned by alembic (`upgrade head` on open; a database at a revision
this code does not know is refused).

Under load (parallel sweep points, many writers on one registry): every write is one short
transaction, retried whole when the database reports a transient conflict (SQLite "database is
locked" after its busy timeout, PostgreSQL serialization failures and deadlocks). SQLite runs
in WAL mode; writers take the lock up front (BEGIN IMMEDIATE), readers do not, so the report
never blocks a run. Migration happens only when the schema is behind, under a lock (SQLite's
write lock, a PostgreSQL advisory lock): processes opening the same registry never race it.
A registry already at head opens without importing alembic at all.

Split by job: engine.py opens the database (pragmas, migrations), rows.py converts rows and
entities, reads.py holds the transactions and queries (StoreReads), this file the writes.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import RegistryError
from orchestrator.registry.engine import (HEAD_REVISION, MIGRATIONS, SQLITE_PRAGMAS, _first_line, _open, _open_fix,
                                          _revisions, safe_url)
from orchestrator.registry.entities import Interval, Run, RunStatus
from orchestrator.registry.models import SqlArtifact, SqlCheck, SqlInterval, SqlRun, SqlUtteranceResult
from orchestrator.registry.reads import T, StoreReads
from orchestrator.registry.rows import (ARTIFACT_COLUMNS, CHECK_COLUMNS, JUDGED_FIELDS, RUN_COLUMNS, _beat,
                                        _check_annotation, _new_id, check_wers, _now, _orm_run, _upsert, _utc,
                                        _utterance_rows)

__all__ = ["ARTIFACT_COLUMNS", "CHECK_COLUMNS", "HEAD_REVISION", "JUDGED_FIELDS", "MIGRATIONS", "RUN_COLUMNS",
           "SQLITE_PRAGMAS", "Store", "_revisions", "_utc"]


class Store(StoreReads):
    """Open (and migrate) the registry at a SQLAlchemy URL, e.g. `sqlite:///registry.db`."""

    def __init__(self, url: str):
        self.url = url
        try:
            self._engine = _open(url)
        except (SQLAlchemyError, ImportError) as exc:
            raise RegistryError(
                f"cannot open the registry database ({_first_line(exc)})",
                where=safe_url(url),
                fix=_open_fix(url),
            ) from exc
        self._sessions = sessionmaker(self._engine)

    def create_run(
        self,
        *,
        experiment: str,
        config: dict[str, Any],
        config_hash: str,
        model_id: str,
        targets: list[str],
        target_summary: str,
        lr: float,
        steps: int,
        dora: bool,
        git_commit: str | None,
        data_stats: dict[str, Any] | None = None,
        run_id: str | None = None,
        criteria: dict[str, Any] | None = None,
        target_report: dict[str, Any] | None = None,
        external: bool = False,
        sweep_id: str | None = None,
        device: str | None = None,
        precision: str | None = None,
    ) -> Run:
        """Record a new run with status "running" and return it.

        `criteria` are the acceptance thresholds the run is judged by (the composed
        `criteria` config), `target_report` what target resolution found (see
        `verdicts.target_report`); both are kept with the run."""
        started_at = _now()
        run_id = run_id or _new_id(experiment, started_at)
        values = dict(
            id=run_id,
            experiment=experiment,
            status=RunStatus.RUNNING.value,
            config=config,
            config_hash=config_hash,
            model_id=model_id,
            targets=list(targets),
            target_summary=target_summary,
            lr=lr,
            steps=steps,
            dora=dora,
            git_commit=git_commit,
            data_stats=data_stats or {},
            started_at=started_at,
            external=external,
            criteria=criteria,
            target_report=target_report,
            sweep_id=sweep_id,
            device=device,
            precision=precision,
            heartbeat_at=started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

        def insert_run(session: Session) -> Run:
            row = SqlRun(**values)
            session.add(row)
            session.flush()
            return _orm_run(row)

        return self._insert_run(run_id, insert_run)

    def record_external(
        self,
        *,
        experiment: str,
        model_id: str,
        steps: int,
        lr: float,
        target_summary: str,
        dora: bool,
        intervals: Sequence[Mapping[str, Any]],
        annotation_status: str | None = None,
        annotation_note: str | None = None,
        criteria: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> Run:
        """Enter a run made outside the tool, with the metrics it reported, in one transaction.

        It is marked `external` and `completed`; `intervals` are dicts of Interval fields
        (`step` required; WERs as fractions). There are no artifacts or per-utterance data,
        so its verdicts rest on the point estimates."""
        fields = set(Interval._fields) - {"created_at"}
        for values in intervals:
            if "step" not in values or set(values) - fields:
                raise RegistryError(f"interval {dict(values)} needs a step and only the fields "
                                    f"{', '.join(sorted(fields))}", fix="e.g. {'step': 600, 'domain_wer': 0.1264}")
        for values in intervals:
            check_wers(values, where=f"step {values['step']}")
        steps_seen = [int(i["step"]) for i in intervals]
        if len(set(steps_seen)) != len(steps_seen):
            raise RegistryError(f"external run {experiment!r} repeats a step: {sorted(steps_seen)}",
                                fix="give each step once")
        if annotation_status is not None:
            _check_annotation(annotation_status)
        now = _now()
        run_id = run_id or _new_id(experiment, now)
        config = {"external": {"experiment": experiment, "model_id": model_id, "steps": steps,
                               "lr": lr, "targets": target_summary, "dora": dora}}
        values = dict(
            id=run_id, experiment=experiment, status=RunStatus.COMPLETED.value, config=config,
            config_hash=hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
            model_id=model_id, targets=[], target_summary=target_summary, lr=lr, steps=steps,
            dora=dora, git_commit=None, data_stats={}, started_at=now, ended_at=now,
            external=True, criteria=criteria, annotation_status=annotation_status,
            annotation_note=annotation_note,
        )

        def insert_run(session: Session) -> None:
            session.add(SqlRun(**values))
            session.flush()
            session.add_all(SqlInterval(run_id=run_id, created_at=now, **point) for point in intervals)
            session.execute(update(SqlRun).where(SqlRun.id == run_id).values(interval_writes=len(intervals)))

        self._insert_run(run_id, insert_run)
        return self.get_run(run_id)

    def add_interval(
        self,
        run_id: str,
        *,
        step: int,
        lr: float | None = None,
        train_loss: float | None = None,
        eval_loss: float | None = None,
        domain_wer: float | None = None,
        heldout_wer: float | None = None,
        domain_utts: int | None = None,
        heldout_utts: int | None = None,
        select_wer: float | None = None,
        select_utts: int | None = None,
        utterances: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        """Record the metrics at `step`, committed at once; a second call for the same
        step replaces the whole row (fields left out become NULL).

        `utterances` maps a split ("domain", "heldout") to what its evaluation produced per
        utterance, in manifest order: `evaluate.UtteranceResult`s or dicts with the keys
        audio_filepath, reference, hypothesis, errors, ref_words. They are written in the
        same transaction as the interval and replace that split's earlier rows for `step`;
        a split left out keeps its rows."""
        check_wers(dict(domain_wer=domain_wer, heldout_wer=heldout_wer, select_wer=select_wer), where=f"step {step}")
        rows = _utterance_rows(run_id, step, utterances or {})
        values = dict(
            lr=lr,
            train_loss=train_loss,
            eval_loss=eval_loss,
            domain_wer=domain_wer,
            heldout_wer=heldout_wer,
            domain_utts=domain_utts,
            heldout_utts=heldout_utts,
            select_wer=select_wer,
            select_utts=select_utts,
            created_at=_now(),
        )

        def write(session: Session) -> None:
            # one INSERT .. ON CONFLICT: an unknown run fails its foreign key (reported below)
            _upsert(session, SqlInterval, (run_id, step), run_id=run_id, step=step, **values)
            # the run's row says its intervals changed (Store.report_runs digests it): same transaction
            session.execute(update(SqlRun).where(SqlRun.id == run_id)
                            .values(interval_writes=SqlRun.interval_writes + 1))
            session.flush()  # the interval row exists before its utterances reference it
            for split in utterances or {}:
                session.execute(delete(SqlUtteranceResult).where(
                    SqlUtteranceResult.run_id == run_id, SqlUtteranceResult.step == step,
                    SqlUtteranceResult.split == split))
            if rows:
                session.execute(insert(SqlUtteranceResult), rows)

        try:
            self._transact(write)
        except IntegrityError:
            self._transact(lambda session: self._require(session, run_id), read_only=True)
            raise

    def add_check(self, run_id: str, name: str, passed: bool, details: dict[str, Any] | None = None) -> None:
        """Record the outcome of check `name` (e.g. "parity") on a run, replacing an earlier one."""
        values = dict(passed=bool(passed), details=details or {}, created_at=_now())

        def write(session: Session) -> None:
            self._require(session, run_id)
            _upsert(session, SqlCheck, (run_id, name), run_id=run_id, name=name, **values)

        self._transact(write)

    def annotate(self, run_id: str, status: str | None, note: str | None = None) -> None:
        """Record a person's judgment of a run (e.g. "flawed" and why); it overrides the
        derived status in the report. `status=None` removes the annotation."""
        if status is not None:
            _check_annotation(status)

        def write(session: Session) -> None:
            row = self._require(session, run_id)
            row.annotation_status = status
            row.annotation_note = note if status is not None else None

        self._transact(write)

    def add_artifact(
        self, run_id: str, *, kind: str, path: str, sha256: str, step: int | None = None
    ) -> None:
        """Record the file of `kind` a run produced, replacing an earlier one of that kind."""
        values = dict(path=path, sha256=sha256, step=step, created_at=_now())

        def write(session: Session) -> None:
            self._require(session, run_id)
            _upsert(session, SqlArtifact, (run_id, kind), run_id=run_id, kind=kind, **values)

        self._transact(write)

    def finish_run(self, run_id: str, status: str, reason: str | None = None, *,
                   stop_reason: str | None = None) -> None:
        """Close a run with its final status (a RunStatus), why it failed (`reason`) and, for a
        run that ended before its last step (early stopping, a pruned trial), `stop_reason`."""
        self._update_run(run_id, status=str(status), failure_reason=reason, stop_reason=stop_reason,
                         ended_at=_now())

    def reopen(self, run_id: str, *, device: str | None = None) -> None:
        """Mark a run `running` again (it is being resumed) by this process: clears its end time
        and failure, and takes over its heartbeat (and `device`, where it resumes)."""
        where = {} if device is None else {"device": device}
        self._update_run(run_id, status=str(RunStatus.RUNNING), failure_reason=None, stop_reason=None, ended_at=None,
                         **where, **_beat())

    def record_telemetry(self, run_id: str, *, peak_memory_mb: float | None = None,
                         train_utts_per_s: float | None = None, eval_realtime_x: float | None = None) -> None:
        """What the run cost so far (training/telemetry.py), replacing the last values given; a
        value left None keeps what is recorded."""
        values = {k: float(v) for k, v in dict(peak_memory_mb=peak_memory_mb, train_utts_per_s=train_utts_per_s,
                                               eval_realtime_x=eval_realtime_x).items() if v is not None}
        if values:
            self._update_run(run_id, **values)

    def progress(self, run_id: str, *, step: int, phase: str, loss: float | None = None,
                 seconds_left: float | None = None) -> None:
        """Where the live run is (for `orchestrator watch`), which is also a heartbeat: one UPDATE.
        `loss` None keeps the last one reported; `seconds_left`, the trainer's forecast
        (training/pace.py), is kept as the time it expects to end (None: no forecast yet)."""
        loss_value = {} if loss is None else {"progress_loss": float(loss)}
        beat = _beat()
        ends_at = None if seconds_left is None else beat["heartbeat_at"] + timedelta(seconds=float(seconds_left))
        self._update_run(run_id, progress_step=int(step), progress_phase=phase, progress_ends_at=ends_at,
                         **loss_value, **beat)

    def heartbeat(self, run_id: str) -> None:
        """Record that this process is alive and training `run_id` (one small UPDATE; the
        trainer calls it every few seconds at most). A stale heartbeat is how a run left
        `running` by a process on another host is recognised as interrupted."""
        self._update_run(run_id, **_beat())

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def _insert_run(self, run_id: str, work: Callable[[Session], T]) -> T:
        """Run `work`, which inserts run `run_id`, in one transaction; an existing id is a
        RegistryError."""
        try:
            return self._transact(work)
        except IntegrityError as exc:
            if not any(name in str(exc.orig) for name in ("runs.id", "pk_runs")):
                raise
            raise RegistryError(
                f"run {run_id!r} already exists", where=safe_url(self.url), fix="use a new run id"
            ) from None

    def _update_run(self, run_id: str, **values: Any) -> None:
        """Set columns of one run in one UPDATE; an unknown id is a RegistryError."""
        statement = update(SqlRun).where(SqlRun.id == run_id).values(**values)
        if self._transact(lambda session: session.execute(statement).rowcount) == 0:
            self._transact(lambda session: self._require(session, run_id), read_only=True)

    def mark_interrupted(self, run_id: str, note: str, *, seen_heartbeat: datetime | None) -> bool:
        """`running` -> `interrupted` with `note` as its reason, only if the run is still
        `running` with the heartbeat the caller saw (a run resumed in the meantime took over the
        heartbeat and is left alone). Returns whether it changed. Nothing else is touched."""
        def write(session: Session) -> bool:
            row = self._require(session, run_id)
            beat = _utc(row.heartbeat_at) if row.heartbeat_at else None
            if row.status != RunStatus.RUNNING or beat != seen_heartbeat:
                return False
            row.status, row.failure_reason, row.ended_at = RunStatus.INTERRUPTED.value, note, _now()
            return True

        return self._transact(write)
