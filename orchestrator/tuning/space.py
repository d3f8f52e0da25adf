"""The search space: checked against the experiment it tunes, turned into Optuna distributions,
and a trial's sampled values turned back into Hydra overrides.

A space's keys are override keys: a value (`optim.lr`, `adapter.r`, `data.replay_fraction`) or
a config group (`targets`, `adapter`), so a trial is `+exp=NAME optim.lr=3.2e-4 targets=qv_only`,
composed by Hydra like any run. Every entry is checked before any training: its shape here, and
its extreme values by composing and validating the experiment with each.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from orchestrator.config.spec import NOT_IDENTITY
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.tuning.settings import ParamConf

EXAMPLE = "e.g. space: {optim.lr: {low: 1.0e-5, high: 1.0e-3, log: true}, targets: {choices: [qv_only, global_qkvo]}}"


def check_shape(space: Mapping[str, ParamConf]) -> None:
    """Refuse an empty space and entries that cannot be sampled (no composition needed)."""
    if not space:
        raise ConfigError("the search space is empty", where="tune.space",
                          fix=f"declare at least one parameter in the tune settings file (conf/tune/*.yaml), {EXAMPLE}")
    for key, p in space.items():
        where = f"tune.space.{key}"
        top = key.split(".", 1)[0]
        if key.startswith("tune") or top in NOT_IDENTITY or top == "criteria":
            raise ConfigError("this key does not change what a run computes (or how it is judged fairly)",
                              where=where, fix="tune model, adapter, targets, optim, data or eval keys")
        if p.choices is not None or p.type == "categorical":
            if not p.choices:
                raise ConfigError("a categorical entry needs a non-empty list of choices", where=where,
                                  fix="e.g. choices: [qv_only, global_qkvo]")
            if p.low is not None or p.high is not None or p.log or p.step is not None:
                raise ConfigError("choices cannot be combined with low/high/log/step", where=where,
                                  fix="keep either choices or a range")
            if len(set(map(repr, p.choices))) != len(p.choices):
                raise ConfigError(f"duplicate choices in {list(p.choices)}", where=where, fix="list each choice once")
            continue
        if p.type not in ("float", "int"):
            raise ConfigError(f"unknown type {p.type!r}", where=f"{where}.type", fix="use float, int or categorical")
        if p.low is None or p.high is None:
            raise ConfigError("a range needs both low and high", where=where, fix=EXAMPLE)
        if not (math.isfinite(p.low) and math.isfinite(p.high)) or p.low >= p.high:
            raise ConfigError(f"low ({p.low:g}) must be below high ({p.high:g})", where=where,
                              fix="swap them, or use choices: [VALUE] for a single value")
        if p.log and p.low <= 0:
            raise ConfigError(f"a log range needs low > 0, got {p.low:g}", where=f"{where}.low",
                              fix="e.g. low: 1.0e-5, or log: false")
        if p.step is not None and (p.log or p.step <= 0):
            raise ConfigError("step must be > 0 and cannot be combined with log", where=f"{where}.step",
                              fix="drop step, or set log: false")
        if p.type == "int" and (p.low != int(p.low) or p.high != int(p.high)):
            raise ConfigError("an int range needs whole low and high", where=where, fix="e.g. low: 4, high: 32")


def distributions(space: Mapping[str, ParamConf]) -> dict[str, Any]:
    """Optuna distributions by key, for `study.ask(fixed_distributions)`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, p in space.items():
        if p.choices is not None or p.type == "categorical":
            out[key] = CategoricalDistribution(list(p.choices or ()))
        elif p.type == "int":
            out[key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def size(space: Mapping[str, ParamConf]) -> int | None:
    """How many distinct points the space has, if it is finite (choices, int ranges, stepped floats)."""
    total = 1
    for p in space.values():
        if p.choices is not None or p.type == "categorical":
            total *= len(p.choices or ())
        elif p.type == "int" and not p.log:
            total *= int((p.high - p.low) // (p.step or 1)) + 1
        elif p.step is not None:
            total *= int(round((p.high - p.low) / p.step)) + 1
        else:
            return None
    return total


def override(key: str, value: Any) -> str:
    """`key=value` as Hydra parses it back to the same value (floats keep every digit)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif value is None:
        text = "null"
    else:
        text = str(value)
    return f"{key}={text}"


def overrides(params: Mapping[str, Any]) -> list[str]:
    return [override(key, value) for key, value in sorted(params.items())]


def extremes(key: str, p: ParamConf) -> list[Any]:
    """The values a check composes with: every choice, or both ends of the range."""
    if p.choices is not None or p.type == "categorical":
        return list(p.choices or ())
    return [int(p.low), int(p.high)] if p.type == "int" else [p.low, p.high]


def check_against(space: Mapping[str, ParamConf], run_overrides: list[str], compose_run) -> None:
    """Compose and validate the experiment with each entry's extreme values (`compose_run`:
    overrides -> RunSpec), so an unknown key, a missing preset or a value the run refuses
    (LR <= 0, replay fraction 1) fails now, naming the entry."""
    for key, p in space.items():
        for value in extremes(key, p):
            line = override(key, value)
            try:
                compose_run([*run_overrides, line])
            except OrchestratorError as exc:
                raise ConfigError(f"{line} is not a valid run: {exc.one_line()}", where=f"tune.space.{key}",
                                  fix="correct the entry's key or range in the tune settings") from None
            except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf composition errors
                from orchestrator.config.compose import config_error

                error = config_error(exc, run_overrides)
                text = error.one_line() if error is not None else " ".join(str(exc).split("\n\n")[0].split())
                raise ConfigError(f"{line} does not compose: {text}", where=f"tune.space.{key}",
                                  fix="use an existing key (optim.lr, adapter.r, ...) or group preset") from None
