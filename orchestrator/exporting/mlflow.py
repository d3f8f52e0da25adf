"""`orchestrator export-mlflow`: runs of the registry copied into an MLflow tracking store.

Each run becomes one MLflow run (named by its run id, in an experiment named after the run's
experiment): the resolved config flattened into params, every interval as step metrics (WERs as
fractions, losses, LR), the verdicts as tags (`verdict.overall`, `verdict.<criterion>`), the
status and stop reason as tags, and `lora_adapter_best` (plus the run's config.yaml) as
artifacts. Exporting a run again replaces its earlier MLflow run (found by the
`orchestrator.run_id` tag), so the store follows the registry. Only the registry is read: no
torch; the adapter is a folder of files. Needs the `mlflow` extra (mlflow-skinny is enough).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.acceptance.verdicts import criteria_for, judge, matrix_status
from orchestrator.config.criteria import CriteriaConf
from orchestrator.errors import OrchestratorError
from orchestrator.registry import Run

log = logging.getLogger(__name__)

RUN_ID_TAG = "orchestrator.run_id"
METRICS = ("domain_wer", "heldout_wer", "select_wer", "eval_loss", "train_loss", "lr")
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "KILLED"}
MAX_PARAM = 6000  # MLflow's limit on a param value (characters)
MAX_TAG = 5000  # and on a tag value (8000 in recent versions)
BATCH = 1000  # MLflow's limit on metrics per log_batch (params: 100, tags: 100)


def client_for(tracking_uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise OrchestratorError("mlflow is not installed", where="export-mlflow",
                                fix='pip install -e ".[mlflow]" (mlflow-skinny is enough)') from None
    return MlflowClient(tracking_uri=tracking_uri)


def params_of(run: Run) -> dict[str, str]:
    """The run's facts and its resolved config, flattened to `group.key` strings."""
    params = {"model_id": run.model_id, "lr": repr(run.lr), "steps": str(run.steps),
              "adapter": "dora" if run.dora else "lora", "targets": run.target_summary,
              "config_hash": run.config_hash, "git_commit": run.git_commit or "", "sweep_id": run.sweep_id or ""}
    params.update(_flat(run.config))
    return {key: value[:MAX_PARAM] for key, value in params.items()}


def _flat(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value if isinstance(value, str) else json.dumps(value)


def metrics_of(run: Run) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step) for every recorded field of every interval."""
    out = []
    for interval in run.intervals:
        stamp = _ms(interval.created_at or run.started_at)
        for key in METRICS:
            value = getattr(interval, key)
            if value is not None:
                out.append((key, float(value), stamp, interval.step))
    return out


def tags_of(run: Run, utterances, criteria: CriteriaConf | None) -> dict[str, str]:
    """Status, stop reason, annotation and every verdict (as the report derives them)."""
    verdict = judge(run, utterances, criteria_for(run, criteria))
    tags = {RUN_ID_TAG: run.id, "orchestrator.experiment": run.experiment, "status": run.status,
            "derived_status": matrix_status(run, verdict), "verdict.overall": verdict.overall,
            "verdict.reason": verdict.reason}
    tags.update({f"verdict.{v.name}": v.status for v in verdict.criteria})
    if verdict.selection is not None:
        tags["tuned_step"] = str(verdict.selection.interval.step)
    optional = {"stop_reason": run.stop_reason, "failure_reason": run.failure_reason,
                "annotation": run.annotation_status, "annotation_note": run.annotation_note}
    tags.update({k: v for k, v in optional.items() if v})
    return {key: value[:MAX_TAG] for key, value in tags.items()}


def artifact_root_for(tracking_uri: str) -> str | None:
    """Where new experiments keep artifacts by default: beside a SQLite store's file
    (`<dir>/mlartifacts`), not MLflow's `./mlruns` in whatever folder the command runs in."""
    if tracking_uri.startswith("sqlite:///"):
        return str(Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts")
    return None  # a tracking server: its own default


def export_runs(store, runs: Sequence[Run], tracking_uri: str, *, experiment: str | None = None,
                artifact_root: str | None = None, artifacts: bool = True,
                criteria: CriteriaConf | None = None) -> dict[str, str]:
    """Copy `runs` into the tracking store at `tracking_uri`; returns {run id: MLflow run id}.
    `store` feeds the verdicts' paired bootstrap (per-utterance errors). New experiments keep
    their artifacts in `<artifact_root>/<experiment>` (default: artifact_root_for)."""
    from mlflow.entities import Metric, Param, RunTag

    client = client_for(tracking_uri)
    artifact_root = artifact_root or artifact_root_for(tracking_uri)
    exported = {}
    for run in runs:
        experiment_id = _experiment(client, experiment or run.experiment, artifact_root)
        for old in client.search_runs([experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run.id}'"):
            client.delete_run(old.info.run_id)  # exported before: replaced
        tags = tags_of(run, store, criteria)
        created = client.create_run(experiment_id, start_time=_ms(run.started_at), run_name=run.id)
        mlflow_id = created.info.run_id
        params = [Param(k, v) for k, v in params_of(run).items()]
        metrics = [Metric(k, v, stamp, step) for k, v, stamp, step in metrics_of(run)]
        run_tags = [RunTag(k, v) for k, v in tags.items()]
        for start in range(0, max(len(params), len(run_tags)), 100):
            client.log_batch(mlflow_id, params=params[start:start + 100], tags=run_tags[start:start + 100])
        for start in range(0, len(metrics), BATCH):
            client.log_batch(mlflow_id, metrics=metrics[start:start + BATCH])
        if artifacts:
            _log_files(client, mlflow_id, run)
        if run.status in STATUS:
            client.set_terminated(mlflow_id, STATUS[run.status], end_time=_ms(run.ended_at) if run.ended_at else None)
        exported[run.id] = mlflow_id
    return exported


def _experiment(client, name: str, artifact_root: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None if artifact_root is None else _location(artifact_root, name)
        return client.create_experiment(name, artifact_location=location)
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _location(root: str, name: str) -> str:
    if "://" in root:
        return f"{root.rstrip('/')}/{name}"
    return (Path(root) / name).resolve().as_uri()


def _log_files(client, mlflow_id: str, run: Run) -> None:
    best = run.artifact("lora_adapter_best")
    if best is None:
        return
    folder = Path(best.path)
    if not folder.is_dir():
        log.warning("%s: %s is missing; exported without it", run.id, folder)
        client.set_tag(mlflow_id, "adapter_missing", str(folder))
        return
    client.log_artifacts(mlflow_id, str(folder), artifact_path="lora_adapter_best")
    config = folder.parent / "config.yaml"
    if config.is_file():
        client.log_artifact(mlflow_id, str(config))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
