"""The Optuna study, stored in the registry's own database (SQLite file or PostgreSQL URL).

Optuna's RDBStorage adds its tables (studies, trials, trial_params, ...) beside the registry's.
Both use alembic, and both would keep their revision in the one `alembic_version` table, so:
the registry is always opened first (`Store(url)`: our schema, our revision), and Optuna is told
not to check its own revision there (`skip_compatibility_check`); its tables are created by
SQLAlchemy's create_all, as Optuna does on a new database. Our migrations ignore its tables
(registry.models.is_registry_object, used by the alembic env's autogenerate).

A trial left RUNNING by a dead worker is found two ways: its worker's pid is gone on this host,
or (any host, e.g. a SLURM node) its heartbeat is older than `tune.grace_s`. It is then marked
FAIL and re-enqueued with the same parameters (Optuna's RetryFailedTrialCallback), so the next
worker composes the same run, whose identity hash finds the interrupted registry run and resumes it.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from typing import Any

from orchestrator.errors import RegistryError
from orchestrator.tuning.settings import TuneConf
from orchestrator.report.tune import TUNE_PREFIX  # every study's name (= its trials' sweep_id) starts with it

log = logging.getLogger(__name__)


def study_name(settings: TuneConf, experiment: str) -> str:
    name = settings.study or experiment
    return name if name.startswith(TUNE_PREFIX) else TUNE_PREFIX + name


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell workers beat the heartbeat themselves (Heartbeat below), which Optuna warns about
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def retry_callback(max_retry: int):
    """Optuna's callback that re-enqueues a dead trial's parameters (renamed in 4.9)."""
    from optuna import storages

    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return retry(max_retry=max_retry)


def storage(url: str, settings: TuneConf):
    """Optuna's RDBStorage on the registry's database, opened after the registry itself."""
    from optuna.storages import RDBStorage
    from sqlalchemy.engine import make_url

    from orchestrator.registry import Store

    _quiet()
    Store(url).close()  # creates/migrates the registry first: `alembic_version` holds our revision
    engine_kwargs: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}  # parallel workers wait for the write lock
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True,
                          heartbeat_interval=settings.heartbeat_s, grace_period=settings.grace_s,
                          heartbeat_stale_trial_callback=retry_callback(settings.max_retry))
    except Exception as exc:  # noqa: BLE001 - any driver error: the storage is unusable
        raise RegistryError(f"cannot open the study storage ({str(exc).splitlines()[0]})", where=url,
                            fix="check the registry URL and that the database is reachable") from exc


def sampler(settings: TuneConf, number: int):
    """A sampler seeded by tune.seed plus `number`, that of the trial it is about to draw
    (tuning/worker.ask_next), so no two trials draw the same random point and none depends on
    which worker asked."""
    import optuna

    seed = settings.seed + number
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE reads the constraints Trial.set_constraint recorded (Optuna >= 5): infeasible trials never lead
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, settings.budget_runs // 2)))


def pruner(settings: TuneConf):
    import optuna

    p = settings.pruning
    if p.pruner == "none":
        return optuna.pruners.NopPruner()
    median = optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    if p.pruner == "patient":
        return optuna.pruners.PatientPruner(median, patience=p.patience)
    return median


def open_study(url: str, name: str, settings: TuneConf, *, create: bool = False,
               attrs: dict[str, Any] | None = None):
    """The study `name` (created once, by the command, before workers start; workers load it)."""
    import optuna

    store = storage(url, settings)
    if create:
        study = optuna.create_study(storage=store, study_name=name, direction="minimize", load_if_exists=True,
                                    sampler=sampler(settings, 0), pruner=pruner(settings))
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
        return study
    return optuna.load_study(storage=store, study_name=name, sampler=sampler(settings, 0),
                             pruner=pruner(settings))


def load_trials(url: str, name: str):
    """Every trial of study `name` (FrozenTrial), for checks and the campaign summary."""
    import optuna

    _quiet()
    return optuna.load_study(storage=storage(url, TuneConf()), study_name=name).get_trials(deepcopy=False)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study, settings: TuneConf) -> list[int]:
    """Mark dead trials FAIL and re-enqueue their parameters; returns the trials recovered.
    Dead: RUNNING with its worker's pid gone on this host, or its heartbeat stale (any host)."""
    import optuna
    from optuna.trial import TrialState

    retry = retry_callback(settings.max_retry)
    here = socket.gethostname()
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
        if host == here and pid is not None and pid != os.getpid() and not pid_alive(pid):
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker recovered it first
            dead.append(trial.number)
            retry(study, study.get_trials(deepcopy=False)[trial.number])
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    optuna.storages.fail_stale_trials(study)  # heartbeat older than grace_s: retried by the storage's callback
    dead += sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before
                   - set(dead))
    for number in dead:
        log.warning("trial %d: its worker died; re-enqueued with the same parameters (its run resumes)", number)
    return dead


class Heartbeat:
    """Records a trial's heartbeat every `interval` seconds while its run trains (ask/tell
    workers do not get Optuna's own heartbeat thread, which only `study.optimize` starts)."""

    def __init__(self, study, trial, interval: int):
        self._storage, self._trial_id, self._interval = study._storage, trial._trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat is not worth stopping the run
                log.debug("heartbeat not recorded: %s", exc)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
