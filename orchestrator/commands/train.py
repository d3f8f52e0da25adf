"""The training entry: `orchestrator [run] +exp=NAME [overrides]` and `-m` sweeps, through Hydra.

Before Hydra starts any job, the composition is checked up front (launchers set in exp files,
the first sweep point built into a RunSpec) and the data, output folder and registry are
checked without torch (training/preflight.py): a mistake costs a second and one line.
`--config-dir DIR` puts a config folder of the user's own on the search path (as
`hydra.searchpath=[file://DIR]`), so its DIR/exp/*.yaml are experiments too.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Flags with which Hydra prints help or the config and runs nothing: no data needs to exist.
INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info")
# Hydra runs one of these modes per call; -m with one of them is refused by Hydra itself.
ONE_MODE_FLAGS = ("-c", "--cfg", "-i", "--info", "-sc", "--shell-completion", "-r", "--run")
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """Plain overrides with each sweep (`a,b,c`, `range(...)`) replaced by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            plain.append(f"{override.get_key_element()}={value}")
        else:
            plain.append(override.input_line)
    return plain


def config_dirs_to_searchpath(argv: list[str]) -> list[str]:
    """`--config-dir DIR` / `-cd DIR` / `--config-dir=DIR` -> one `hydra.searchpath` override, so
    the up-front checks (Hydra's compose API) and the run see the same search path."""
    from orchestrator.config.compose import with_config_dirs

    rest, dirs = [], []
    args = iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            dirs.append(value if eq else next(args, ""))
        else:
            rest.append(arg)
    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        from orchestrator.errors import ConfigError

        raise ConfigError(f"no such folder {missing[0]!r}", where="--config-dir",
                          fix="give a folder holding your configs, e.g. --config-dir my_conf (with my_conf/exp/NAME.yaml)")
    return with_config_dirs(rest, dirs)  # order kept: `--cfg job` stays a pair


def check_up_front(overrides: list[str], multirun: bool):
    """The spec of the first point, after the exp files' launchers are checked; a composition
    error is raised as a ConfigError naming the key."""
    from orchestrator.config.compose import compose, config_error
    from orchestrator.config.launchers import check_exp_launchers
    from orchestrator.config.spec import build_spec

    try:
        check_exp_launchers(overrides, multirun)
        return build_spec(compose(first_of_sweeps(overrides)))
    except Exception as exc:
        error = config_error(exc, overrides)
        if error is None:
            raise
        raise error from exc


def main(argv: list[str], debug: bool) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from orchestrator.config import schema
    from orchestrator.config.paths import CONF_DIR
    from orchestrator.config.spec import build_spec
    from orchestrator.errors import ConfigError
    from orchestrator.training.preflight import check_before_torch, train_one

    if "--rerun" in argv:  # the flag form of rerun=true
        argv = [a for a in argv if a != "--rerun"] + ["rerun=true"]
    argv = config_dirs_to_searchpath(argv)
    overrides = [a for a in argv if not a.startswith("-")]
    multirun = "-m" in argv or "--multirun" in argv
    modes = [a for a in argv if a.partition("=")[0] in ONE_MODE_FLAGS]
    if multirun and modes:
        raise ConfigError(f"-m (multirun) and {modes[0]} cannot be combined: Hydra runs one mode per call",
                          where=" ".join(["-m", modes[0]]),
                          fix=f"drop -m and give one value per swept key to see one point's config with {modes[0]}")
    if not any(a.partition("=")[0] in INFO_FLAGS or a.startswith("--info") for a in argv):
        check_before_torch(check_up_front(overrides, multirun))

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def task(cfg) -> None:
        from orchestrator.cli import exit_on

        try:
            hydra_cfg = HydraConfig.get()
            spec = build_spec(cfg, hydra_cfg.runtime.choices.get("exp"))
            swept = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
            train_one(spec, sweep_id=f"{spec.experiment}-{Path(hydra_cfg.sweep.dir).name}" if swept else None)
        except Exception as exc:  # noqa: BLE001 - Hydra would print a traceback; the run is recorded failed
            if debug:
                raise
            exit_on(exc)

    schema.register()
    sys.argv = [sys.argv[0], *argv]
    task()
