"""The `tune` settings: typed, merged from three places, validated before anything runs.

Why not a `tune` node in the run's config (RunConf): a trial must be exactly the run that
`orchestrator run +exp=NAME <sampled overrides>` would make, with the same identity hash and
the same recorded config. The campaign's settings (budget, workers, space) say how runs are
chosen, not what a run computes, so they never enter a run's config. They come from, in order:
  1. a settings file: `tune=NAME` (conf/tune/NAME.yaml) or `tune=PATH.yaml`; without it the
     experiment's own conf/tune/<exp>.yaml if there is one, else conf/tune/default.yaml;
  2. `tune.KEY=VALUE` on the command line (`tune.pruning.pruner=none`).
Each layer is merged onto the TuneConf schema below, so `tune.budget_run=3` fails naming the key.
The search space (`space`) is declared in files: its keys are override keys (`optim.lr`, `targets`).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 - OmegaConf reads these annotations

from orchestrator.config.paths import CONF_DIR
from orchestrator.errors import ConfigError

TUNE_DIR = CONF_DIR / "tune"
LAUNCHERS = ("local", "slurm", "submitit_local")  # submitit_local: submitit's LocalExecutor (no cluster)
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "patient", "none")


@dataclass
class ParamConf:
    """One dimension of the search space. `choices` makes it categorical (values or group
    presets, e.g. targets: [qv_only, global_qkvo]); otherwise a float (or `type: int`) range."""

    type: str = "float"  # float | int | categorical (implied by choices)
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False  # sample on a log scale (low must be > 0)
    step: Optional[float] = None  # a grid step within [low, high] (not with log)
    choices: Optional[List[Any]] = None


@dataclass
class PruningConf:
    """When a trial stops before its last step (see tuning/pruning.py)."""

    pruner: str = "median"  # median | patient | none: the (dev-set, else domain) WER not improving against the study
    startup_trials: int = 2  # finished trials before the pruner compares anything
    warmup_steps: int = 0  # a trial's steps before the pruner may stop it
    patience: int = 1  # patient: intervals without improvement tolerated before the median rule applies
    guard_slack: float = 1.0  # points beyond criteria.max_heldout_regression that count as blown ...
    guard_patience: int = 2  # ... at this many consecutive intervals: beyond recovery, stop


@dataclass
class SlurmConf:
    partition: Optional[str] = None
    timeout_min: int = 240
    cpus_per_task: int = 4
    gpus_per_node: int = 0
    mem_gb: int = 16


@dataclass
class TuneConf:
    budget_runs: int = 8  # trials (registry runs) the study may hold, counted across re-runs
    budget_steps: Optional[int] = None  # train steps over all trials, when set
    workers: int = 1  # trials at once: local processes or SLURM array tasks
    launcher: str = "local"  # local | slurm | submitit_local
    study: Optional[str] = None  # default: tune-<exp>; also the trials' sweep_id
    seed: int = 0  # the sampler's; trial n draws with seed + n (tuning/worker.py)
    sampler: str = "tpe"  # tpe | random
    stop_on_pass: bool = True  # the campaign ends at the first run whose verdict is PASS
    heartbeat_s: int = 10  # a running trial's heartbeat in the study ...
    grace_s: int = 60  # ... older than this: its worker is dead, the trial is retried
    max_retry: int = 3  # retries of one killed trial
    space: Dict[str, ParamConf] = field(default_factory=dict)
    pruning: PruningConf = field(default_factory=PruningConf)
    slurm: SlurmConf = field(default_factory=SlurmConf)


def split_overrides(overrides: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(the `tune=NAME` choice, `tune.*` overrides as `KEY=VALUE`, the run's own overrides)."""
    choice, tune, run = None, [], []
    for item in overrides:
        key = item.lstrip("+~")
        if key.startswith("tune="):
            choice = key.split("=", 1)[1]
        elif key.startswith("tune."):
            tune.append(key.removeprefix("tune."))
        else:
            run.append(item)
    return choice, tune, run


def load_settings(choice: str | None, experiment: str | None, dotlist: list[str]) -> TuneConf:
    """Merge the settings file (see above) and `tune.*` overrides onto TuneConf, then validate;
    every problem is one ConfigError naming its key."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    name = choice or (experiment if experiment and (TUNE_DIR / f"{experiment}.yaml").is_file() else "default")
    path = Path(name) if name.endswith((".yaml", ".yml")) else TUNE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TUNE_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown tune settings {name!r}", where=f"tune={name}",
                          fix=f"use one of {', '.join(known)} (files in conf/tune/) or a YAML file's path")
    layers = [(str(path), lambda: OmegaConf.load(path)),
              ("the command line", lambda: OmegaConf.from_dotlist(dotlist))]
    merged = OmegaConf.structured(TuneConf)
    # a layer's space replaces the one before it, whole (spaces are not unions)
    for where, layer in layers:
        try:
            node = layer()
            if not isinstance(node, DictConfig):
                raise ValueError("not a mapping of settings")
            if "space" in node:
                space = node.space
                node = OmegaConf.masked_copy(node, [k for k in node if k != "space"])
                merged.space = {}
                node = OmegaConf.merge(node, {"space": space})
            merged = OmegaConf.merge(merged, node)
        except OmegaConfBaseException as exc:
            key = f"tune.{exc.full_key}" if getattr(exc, "full_key", None) else where
            raise ConfigError(_first_line(exc), where=key, fix=_known_hint(str(exc)) or f"check {where}") from None
        except Exception as exc:  # noqa: BLE001 - YAML errors and the like: the file is unreadable
            raise ConfigError(f"cannot read it ({_first_line(exc)})", where=where, fix="fix its syntax") from None
    conf: TuneConf = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate(conf)
    return conf


def validate(t: TuneConf) -> None:
    """Settings other than the space (space.py checks each entry against the experiment)."""
    p = t.pruning
    checks = [
        (t.budget_runs >= 1, "tune.budget_runs", f"the budget must be at least one run, got {t.budget_runs}",
         "set tune.budget_runs=8"),
        (t.budget_steps is None or t.budget_steps >= 1, "tune.budget_steps",
         f"must be at least 1 step (or unset), got {t.budget_steps}", "set tune.budget_steps=2000 or leave it out"),
        (t.workers >= 1, "tune.workers", f"must be >= 1, got {t.workers}", "set tune.workers=2"),
        (t.launcher in LAUNCHERS, "tune.launcher", f"unknown launcher {t.launcher!r}", f"use one of {', '.join(LAUNCHERS)}"),
        (t.sampler in SAMPLERS, "tune.sampler", f"unknown sampler {t.sampler!r}", f"use one of {', '.join(SAMPLERS)}"),
        (p.pruner in PRUNERS, "tune.pruning.pruner", f"unknown pruner {p.pruner!r}", f"use one of {', '.join(PRUNERS)}"),
        (p.startup_trials >= 0 and p.warmup_steps >= 0 and p.patience >= 0, "tune.pruning",
         "startup_trials, warmup_steps and patience must be >= 0", "see conf/tune/default.yaml"),
        (p.guard_slack >= 0, "tune.pruning.guard_slack", f"must be >= 0 points, got {p.guard_slack}",
         "set tune.pruning.guard_slack=1.0"),
        (p.guard_patience >= 1, "tune.pruning.guard_patience", f"must be >= 1, got {p.guard_patience}",
         "set tune.pruning.guard_patience=2"),
        (t.heartbeat_s >= 1 and t.grace_s > t.heartbeat_s, "tune.grace_s",
         f"the grace period ({t.grace_s} s) must exceed the heartbeat ({t.heartbeat_s} s, >= 1)",
         "e.g. tune.heartbeat_s=10 tune.grace_s=60"),
        (t.max_retry >= 0, "tune.max_retry", f"must be >= 0, got {t.max_retry}", "set tune.max_retry=3"),
        (t.study is None or (t.study.strip() != "" and "/" not in t.study), "tune.study",
         f"not a usable study name: {t.study!r}", "a short name without '/', e.g. tune.study=lr_rank"),
    ]
    for ok, key, what, fix in checks:
        if not ok:
            raise ConfigError(what, where=key, fix=fix)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _known_hint(message: str) -> str | None:
    """`did you mean ...` for "Key 'x' not in 'TuneConf'" (or PruningConf, ParamConf ...)."""
    import dataclasses

    schemas = {c.__name__: c for c in (TuneConf, PruningConf, ParamConf, SlurmConf)}
    for name, schema in schemas.items():
        if f"not in '{name}'" in message:
            known = [f.name for f in dataclasses.fields(schema)]
            bad = message.split("'")[1] if "'" in message else ""
            near = difflib.get_close_matches(bad, known, n=1)
            return (f"did you mean {near[0]}? " if near else "") + f"known keys: {', '.join(known)}"
    return None
