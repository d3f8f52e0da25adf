"""Launchers chosen inside experiment files: honoured, or refused before anything runs.

Hydra (1.3) picks a multirun's launcher from the config composed with the command line's
plain overrides only; sweep overrides are left out. So a launcher an `exp` file sets
(`defaults: [override /hydra/launcher: joblib]`, or `hydra: launcher:` keys):
  - works when `+exp=NAME` is a single value: it is part of that composition;
  - is silently dropped when `exp` itself is swept (`+exp=a,b`): every point then runs on the
    launcher of the command line (basic by default), while each job's own config claims the
    exp's launcher.
`check_exp_launchers` refuses the second case with one line naming the file and the fix.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.config.paths import CONF_DIR


def _launcher(overrides: Sequence[str]) -> tuple[str | None, Any]:
    """(launcher choice, hydra.launcher node) of the config composed with `overrides`."""
    from omegaconf import OmegaConf

    from orchestrator.config.compose import compose

    cfg = compose(overrides, with_hydra=True)
    return cfg.hydra.runtime.choices.get("hydra/launcher"), OmegaConf.to_container(cfg.hydra.launcher)


def exp_file(name: str) -> str:
    path = CONF_DIR / "exp" / f"{name}.yaml"
    return f"conf/exp/{name}.yaml" if path.is_file() else f"exp/{name}.yaml (on hydra.searchpath)"


def check_exp_launchers(overrides: Sequence[str], multirun: bool) -> None:
    """Refuse, before anything runs, a launcher set in an exp file that would not take effect:
    launcher keys the chosen launcher does not have, or (multirun) any launcher of an exp that
    is swept, which Hydra drops. Other composition errors are left to the caller's check."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    exp = next((o for o in parsed if o.key_or_group == "exp"), None)
    if exp is None:
        return
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    if not exp.is_sweep_override():
        _compose_launcher(plain, exp.value())
        return
    used_choice, used = _launcher(plain)
    for name in exp.sweep_string_iterator():
        choice, wanted = _compose_launcher([*plain, f"{exp.get_key_element()}={name}"], name)
        if not multirun or wanted == used:
            continue
        if choice != used_choice:
            what, fix = f"the launcher ({choice})", f"hydra/launcher={choice}"
        else:
            changed = [f"hydra.launcher.{k}={v}" for k, v in wanted.items() if used.get(k) != v]
            what, fix = f"launcher settings ({', '.join(changed)})", " ".join(changed)
        raise ConfigError(
            f"sets {what}, which Hydra ignores when exp is swept: every point would run on the "
            f"command line's launcher ({used_choice}) and its settings",
            where=exp_file(name),
            fix=f"remove it from the exp file and give it on the command line: {fix}")


def _compose_launcher(overrides: list[str], name: str) -> tuple[str | None, Any]:
    """`_launcher`, with launcher keys the chosen launcher lacks reported against the exp file."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from orchestrator.config.compose import omegaconf_cause

    try:
        return _launcher(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = omegaconf_cause(exc)
        key = str(getattr(cause, "full_key", None) or "")
        if not key.startswith("hydra.launcher."):
            return None, None  # not about the launcher: the caller's validation reports it
        raise ConfigError(
            f"sets {key}, which the chosen launcher does not have",
            where=exp_file(name),
            fix="choose the launcher and its settings on the command line, e.g. "
                "hydra/launcher=joblib hydra.launcher.n_jobs=2, not in the exp file") from None
