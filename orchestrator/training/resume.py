"""`orchestrator resume`: continue interrupted runs, every one of a sweep or the ones named, each
from the config saved beside it (`<output_dir>/<run>/config.yaml`) and its last interval
checkpoint, through the same `train.run` as a fresh run.

A run is resumable when it is `interrupted`, or recorded `running` with no live process (see
orchestrator/liveness.py). Everything is checked before the first run continues.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from orchestrator.registry import liveness
from orchestrator.errors import OrchestratorError
from orchestrator.registry import Run, RunStatus, Store
from orchestrator.artifacts.run_folder import CONFIG as RUN_CONFIG, RunFolder
from orchestrator.config.spec import RunSpec, build_spec


def select(store: Store, run_ids: Sequence[str] = (), sweep: str | None = None) -> list[Run]:
    """The runs to resume: `run_ids` (each must be resumable), else every resumable run of
    `sweep` (none is fine: nothing to do). Oldest first."""
    if bool(run_ids) == bool(sweep):
        raise OrchestratorError("give the runs to resume, or --sweep, not both", where="resume",
                                fix="orchestrator resume RUN_ID [RUN_ID ...]  or  orchestrator resume --sweep SWEEP_ID")
    if sweep:
        runs = liveness.settle(store.list_runs(sweep_id=sweep))
        if not runs:
            raise OrchestratorError(f"no run belongs to sweep {sweep!r}", where="--sweep",
                                    fix="see the sweep column of `orchestrator runs`")
        return [run for run in runs if run.status == RunStatus.INTERRUPTED]
    runs = liveness.settle([store.get_run(run_id) for run_id in dict.fromkeys(run_ids)])
    for run in runs:
        if run.status != RunStatus.INTERRUPTED:
            raise OrchestratorError(f"run {run.id} is {run.status}, not interrupted", where="resume",
                                    fix=_not_resumable_fix(run))
    return runs


def _not_resumable_fix(run: Run) -> str:
    if run.external:
        return "external runs (orchestrator record) have nothing to resume"
    if run.status == RunStatus.RUNNING:
        return "it is training now; wait for it or stop its process first"
    if run.status == RunStatus.COMPLETED:
        return "nothing to do; `python -m orchestrator ... --rerun` trains it again"
    return "start it again with `python -m orchestrator ... --rerun` (its config is in the run folder)"


def spec_for(run: Run, registry_url: str, root: Path | None = None) -> RunSpec:
    """The run's spec, rebuilt from the config.yaml beside it, writing to `registry_url`. Its
    identity hash must still be the run's: changed manifests or code would not resume exactly."""
    from orchestrator.config.schema import RunConf

    folder = liveness.run_dir(run, root)
    path = RunFolder.at(folder).config if folder is not None else None
    if path is None or not path.is_file():
        raise OrchestratorError(f"no {RUN_CONFIG} for run {run.id}", where=str(path or run.id),
                                fix="run `orchestrator resume` from the folder the run started in "
                                    "(output_dir is relative to it), with its outputs in place")
    cfg = OmegaConf.merge(OmegaConf.structured(RunConf), OmegaConf.load(path))
    cfg.registry.url = registry_url
    spec = build_spec(cfg)
    if spec.config_hash != run.config_hash:
        raise OrchestratorError(
            f"run {run.id} cannot resume exactly: its config, manifests or orchestrator version "
            "changed since it started (identity hash differs)", where=str(path),
            fix="restore the manifests it trained on, or start it anew with `python -m orchestrator ... --rerun`")
    return spec


def resume(store: Store, runs: Sequence[Run], *, registry_url: str, progress: bool = True) -> list[str]:
    """Continue each run in turn (specs all checked first); returns their ids."""
    from orchestrator.training import loop as train

    specs = [spec_for(run, registry_url) for run in runs]
    done = []
    for run, spec in zip(runs, specs):
        if train.is_alive(RunFolder(spec.output_dir, run.id).path):
            raise OrchestratorError(f"run {run.id} was picked up by another process", where="resume",
                                    fix="nothing to do for it; resume the others by id")
        done.append(train.run(spec, store, progress=progress, sweep_id=run.sweep_id, resume=run))
    return done
