"""Rows <-> entities: what the Store reads unpacked by position into plain records, what it
writes built and checked before its transaction, and the small value helpers (ids, UTC times)."""
from __future__ import annotations

import functools
import json
import math
import operator
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Text, case, cast, exists, null, or_
from sqlalchemy.orm import Session

from orchestrator.errors import RegistryError
from orchestrator.registry.entities import Artifact, Check, Interval, Run, RunStatus, UtteranceRow
from orchestrator.registry.models import Base, SqlRun, SqlInterval, SqlUtteranceResult

# What judging a run reads of its intervals (orchestrator/acceptance/verdicts.py), all that
# `list_runs(lean=True)` reads of them.
JUDGED_FIELDS = ("step", "eval_loss", "domain_wer", "heldout_wer", "select_wer")
# The columns of `runs` in Run's order (its intervals, artifacts and checks come from their own
# tables), and those of artifacts and checks in Artifact's and Check's: reads unpack rows by
# position. tests/test_report_scale.py checks them against the tables and the entities.
RUN_COLUMNS = ("id", "experiment", "status", "config", "config_hash", "model_id", "targets", "target_summary",
               "lr", "steps", "dora", "git_commit", "data_stats", "started_at", "ended_at", "failure_reason",
               "external", "criteria", "target_report", "annotation_status", "annotation_note", "sweep_id",
               "heartbeat_at", "host", "pid", "stop_reason", "device", "precision", "peak_memory_mb",
               "train_utts_per_s", "eval_realtime_x", "progress_step", "progress_loss", "progress_phase",
               "progress_ends_at")
ARTIFACT_COLUMNS = ("kind", "path", "sha256", "step", "created_at")
CHECK_COLUMNS = ("name", "passed", "details", "created_at")
SPLITS = ("domain", "heldout", "select")  # "select": the dev set, eval.select_manifest
UTTERANCE_FIELDS = ("audio_filepath", "reference", "hypothesis", "errors", "ref_words")
ANNOTATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _beat() -> dict[str, Any]:
    """The liveness columns for "this process, now"."""
    return {"heartbeat_at": _now(), "host": socket.gethostname(), "pid": os.getpid()}


def _upsert(session: Session, model: type[Base], key: tuple[Any, ...], **values: Any) -> None:
    """Insert the row with primary key `key`, or replace its other columns: one INSERT .. ON
    CONFLICT DO UPDATE on SQLite and PostgreSQL, a read then a write elsewhere."""
    from sqlalchemy.dialects import postgresql, sqlite  # not at the top: postgresql's costs a report 30 ms

    upsert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(session.get_bind().dialect.name)
    if upsert is not None:
        table = model.__table__
        statement = upsert(table).values(**values)
        keys = [c.name for c in table.primary_key.columns]
        session.execute(statement.on_conflict_do_update(
            index_elements=keys, set_={name: statement.excluded[name] for name in values if name not in keys}))
        return
    row = session.get(model, key)
    if row is None:
        session.add(model(**values))
    else:
        for name, value in values.items():
            setattr(row, name, value)


def _run_columns(lean: bool) -> list[Any]:
    """What a read of `runs` selects, in RUN_COLUMNS order. A lean one (`list_runs(lean=True)`)
    selects NULL for targets and data_stats, and the config only of runs in a sweep or running."""
    table = SqlRun.__table__
    # criteria as their JSON text, parsed once per distinct text (_to_run): runs share a few sets
    chosen = {"criteria": cast(table.c.criteria, Text)}
    if lean:
        # runs with per-utterance results: their config groups seeds, their data_stats name speakers
        judged = exists().where(SqlUtteranceResult.run_id == table.c.id)
        needs_config = or_(table.c.sweep_id.is_not(None), table.c.status == RunStatus.RUNNING.value, judged)
        chosen.update(targets=null(), data_stats=case((judged, table.c.data_stats)),
                      config=case((needs_config, table.c.config)))
    return [chosen.get(name, table.c[name]) for name in RUN_COLUMNS]


def _orm_run(row: SqlRun) -> Run:
    """A Run from an ORM SqlRun, its children from its relationships."""
    return _to_run(_RUN_VALUES(row), map(_to_interval, row.intervals), map(_ARTIFACT_VALUES, row.artifacts),
                   map(_CHECK_VALUES, row.checks))


def _to_run(values: Sequence[Any], intervals: Iterable[Interval], artifacts: Iterable[Sequence[Any]],
            checks: Iterable[Sequence[Any]]) -> Run:
    """A Run from the values of its `runs` row (RUN_COLUMNS, in order: config, targets and
    data_stats None when not read, criteria parsed or as JSON text), its intervals, and its
    artifacts' and checks' values (ARTIFACT_COLUMNS, CHECK_COLUMNS)."""
    (run_id, experiment, status, config, config_hash, model_id, targets, target_summary, lr, steps, dora,
     git_commit, data_stats, started_at, ended_at, failure_reason, external, criteria, target_report,
     annotation_status, annotation_note, sweep_id, heartbeat_at, host, pid, stop_reason, device, precision,
     peak_memory_mb, train_utts_per_s, eval_realtime_x, progress_step, progress_loss, progress_phase,
     progress_ends_at) = values
    return Run(
        id=run_id,
        experiment=experiment,
        status=status,
        config={} if config is None else config,
        config_hash=config_hash,
        model_id=model_id,
        targets=list(targets or ()),
        target_summary=target_summary,
        lr=lr,
        steps=steps,
        dora=dora,
        git_commit=git_commit,
        data_stats={} if data_stats is None else data_stats,
        started_at=_utc(started_at),
        ended_at=_utc(ended_at) if ended_at else None,
        failure_reason=failure_reason,
        intervals=tuple(intervals),
        artifacts=tuple(map(_to_artifact, artifacts)),
        checks=tuple(map(_to_check, checks)),
        external=bool(external),
        criteria=dict((_json(criteria) if isinstance(criteria, str) else criteria) or {}),  # a copy of its own
        target_report=target_report,
        annotation_status=annotation_status,
        annotation_note=annotation_note,
        sweep_id=sweep_id,
        heartbeat_at=_utc(heartbeat_at) if heartbeat_at else None,
        host=host,
        pid=pid,
        stop_reason=stop_reason,
        device=device,
        precision=precision,
        peak_memory_mb=peak_memory_mb,
        train_utts_per_s=train_utts_per_s,
        eval_realtime_x=eval_realtime_x,
        progress_step=progress_step,
        progress_loss=progress_loss,
        progress_phase=progress_phase,
        progress_ends_at=_utc(progress_ends_at) if progress_ends_at else None,
    )


_RUN_ID = operator.itemgetter(0)  # of an artifact's or check's row read by Store._runs
_STARTED_AT = operator.attrgetter("started_at")
_RUN_VALUES, _ARTIFACT_VALUES, _CHECK_VALUES = (operator.attrgetter(*names) for names in
                                                (RUN_COLUMNS, ARTIFACT_COLUMNS, CHECK_COLUMNS))
_new_tuple = tuple.__new__
_json = functools.lru_cache(maxsize=64)(json.loads)  # shared parses: callers copy what they keep



_INTERVAL_VALUES = operator.attrgetter(*Interval._fields[:-1])  # every field but created_at, in order


def _to_interval(row: SqlInterval) -> Interval:
    return Interval(*_INTERVAL_VALUES(row), _utc(row.created_at))


def _full_intervals(rows: Iterable[Sequence[Any]]) -> list[Interval]:  # Interval._fields
    return [Interval(*row[:-1], _utc(row[-1])) for row in rows]


def _judged_intervals(rows: Iterable[Sequence[Any]]) -> list[Interval]:  # JUDGED_FIELDS
    """Lean intervals, the fields not read None. tuple.__new__ builds each without calling the
    named tuple's own __new__, a Python function: 500,000 calls fewer for the report."""
    return [_new_tuple(Interval, (step, None, None, eval_loss, domain_wer, heldout_wer, None, None, select_wer,
                                  None, None))
            for step, eval_loss, domain_wer, heldout_wer, select_wer in rows]


def _to_artifact(values: Sequence[Any]) -> Artifact:  # ARTIFACT_COLUMNS
    kind, path, sha256, step, created_at = values
    return Artifact(kind=kind, path=path, sha256=sha256, step=step, created_at=_utc(created_at))


def _to_check(values: Sequence[Any]) -> Check:  # CHECK_COLUMNS
    name, passed, details, created_at = values
    return Check(name=name, passed=bool(passed), details=dict(details or {}), created_at=_utc(created_at))


def _to_utterance(row: SqlUtteranceResult) -> UtteranceRow:
    return UtteranceRow(
        step=row.step,
        split=row.split,
        idx=row.idx,
        audio_filepath=row.audio_filepath,
        reference=row.reference,
        hypothesis=row.hypothesis,
        errors=row.errors,
        ref_words=row.ref_words,
    )


def _utterance_rows(run_id: str, step: int, utterances: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The utterance_results rows to insert, built (and checked) before the transaction."""
    rows = []
    for split, items in utterances.items():
        _check_split(split)
        for idx, item in enumerate(items):
            try:
                values = {key: item[key] if isinstance(item, Mapping) else getattr(item, key)
                          for key in UTTERANCE_FIELDS}
            except (KeyError, AttributeError) as exc:
                raise RegistryError(f"utterance {idx} of {split!r} at step {step} lacks {exc}",
                                    fix=f"give each utterance {', '.join(UTTERANCE_FIELDS)}") from None
            values.update(errors=int(values["errors"]), ref_words=int(values["ref_words"]),
                          audio_filepath=str(values["audio_filepath"]))
            rows.append(dict(run_id=run_id, step=step, split=split, idx=idx, **values))
    return rows


WER_FIELDS = ("domain_wer", "heldout_wer", "select_wer")


def check_wers(values: Mapping[str, Any], *, where: str) -> None:
    """Refuse a WER that is not a finite number >= 0 (NaN, inf, negative): the judge would
    otherwise skip or select it. (A WER above 1 is possible: insertions.)"""
    for name in WER_FIELDS:
        value = values.get(name)
        if value is None:
            continue
        try:
            ok = math.isfinite(value) and value >= 0
        except TypeError:
            ok = False
        if not ok:
            raise RegistryError(f"{name} {value!r} at {where} is not a finite number >= 0",
                                fix="record WERs as fractions (0.1234 for 12.34 %); a failed evaluation is no WER")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise RegistryError(f"unknown evaluation split {split!r}", fix=f"use one of {', '.join(SPLITS)}")


def _check_annotation(status: str) -> None:
    if not ANNOTATION.fullmatch(status):
        raise RegistryError(
            f"annotation status {status!r} is not a short lower-case word",
            fix="use e.g. flawed, failed, passed or superseded (a-z, 0-9, - or _, up to 32)",
        )


def _new_id(experiment: str, moment: datetime) -> str:
    return f"{experiment}-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


_EPOCH, _EPOCH_UTC = datetime(1970, 1, 1), datetime(1970, 1, 1, tzinfo=timezone.utc)


def _utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored as UTC. (The same instant as
    `moment.replace(tzinfo=timezone.utc)`, by exact arithmetic that costs a twentieth of it:
    a report converts 50,000.)"""
    return moment if moment.tzinfo else _EPOCH_UTC + (moment - _EPOCH)

