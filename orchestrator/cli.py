"""Command line: `orchestrator [run] +exp=NAME [overrides]`, `report`, `runs`, `plan`.

Thin on purpose: parse, dispatch, and turn known errors into one line on stderr with a non-zero
exit (tracebacks only with --debug or HYDRA_FULL_ERROR=1). Heavy imports (torch) happen only on
the paths that train or load a model, so `report` and `runs` start fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_REGISTRY = "sqlite:///registry.db"
SUBCOMMANDS = ("report", "runs", "plan")
EXIT_USER_ERROR = 2
log = logging.getLogger("orchestrator")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR") == "1"
    argv = [a for a in argv if a != "--debug"]
    from orchestrator.errors import OrchestratorError

    try:
        if argv and argv[0] in SUBCOMMANDS:
            subcommand(argv)
        else:
            run_hydra(argv[1:] if argv[:1] == ["run"] else argv, debug)
    except OrchestratorError as exc:
        if debug:
            raise
        fail(exc.one_line())


# --- training runs (Hydra) ---------------------------------------------------------------------

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


def hydra_error_line(exc: Exception) -> str:
    from hydra.errors import MissingConfigException
    from orchestrator.spec import known_experiments

    if isinstance(exc, MissingConfigException) and "exp/" in str(exc):
        name = str(exc).split("exp/", 1)[1].split("'", 1)[0]
        return f"+exp={name}: unknown experiment (fix: use one of {', '.join(known_experiments())}; files in conf/exp/)"
    lines = [str(exc).split("\n\n")[0].replace("\n", " ")]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause):
        lines.append(str(cause).splitlines()[0])
    return " — ".join(lines) + " (fix: check the key's spelling and group names in conf/; --cfg job shows the config)"


def run_hydra(argv: list[str], debug: bool) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from orchestrator import spec as specs

    overrides = [a for a in argv if not a.startswith("-")]
    try:  # validate the composition up front: one clear line instead of Hydra's report
        specs.build_spec(specs.compose(first_of_sweeps(overrides)))
    except Exception as exc:  # noqa: BLE001 - any composition failure is a user error here
        from orchestrator.errors import OrchestratorError

        if debug:
            raise
        fail(exc.one_line() if isinstance(exc, OrchestratorError) else hydra_error_line(exc))

    @hydra.main(config_path=str(specs.CONF_DIR), config_name="config", version_base="1.3")
    def task(cfg) -> None:
        from orchestrator.errors import OrchestratorError

        try:
            spec = specs.build_spec(cfg, HydraConfig.get().runtime.choices.get("exp"))
            train_one(spec)
        except OrchestratorError as exc:
            if debug:
                raise
            fail(exc.one_line())

    specs.register()
    sys.argv = [sys.argv[0], *argv]
    task()


def train_one(spec) -> str:
    from orchestrator import train
    from orchestrator.registry import Store

    store = Store(spec.registry.url)
    try:
        run_id = train.run(spec, store)
    finally:
        store.close()
    log.info("run %s finished: outputs in %s", run_id, Path(spec.output_dir) / run_id)
    return run_id


# --- subcommands -------------------------------------------------------------------------------

def subcommand(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="rebuild the generated blocks of EXPERIMENTS.md from the registry")
    p.add_argument("--registry", default=DEFAULT_REGISTRY, help="SQLAlchemy URL (default: %(default)s)")
    p.add_argument("--output", default="EXPERIMENTS.md", type=Path)
    p = sub.add_parser("runs", help="list the runs in the registry")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--json", action="store_true", help="every run with its fields and intervals, as JSON")
    p = sub.add_parser("plan", help="compose, validate and resolve targets without training")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +exp=exp_2_5_v2_universal_lora")
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    {"report": cmd_report, "runs": cmd_runs, "plan": cmd_plan}[args.command](args)


def open_existing(url: str):
    """The registry at `url`; a SQLite file that does not exist is an error, not a new database."""
    from orchestrator.errors import RegistryError
    from orchestrator.registry import Store

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise RegistryError(f"no registry at {url}", where="--registry",
                            fix="run an experiment first (it creates registry.db) or pass --registry URL")
    return Store(url)


def cmd_report(args) -> None:
    from orchestrator.report import update_experiments_md

    store = open_existing(args.registry)
    runs = store.list_runs()
    store.close()
    update_experiments_md(args.output, runs)
    print(f"{args.output}: {len(runs)} runs")


def cmd_runs(args) -> None:
    store = open_existing(args.registry)
    runs = store.list_runs()
    store.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], indent=2))
        return
    from tabulate import tabulate

    rows = [(r.id, r.experiment, r.status, r.steps, f"{r.lr:g}", len(r.intervals)) for r in runs]
    print(tabulate(rows, headers=["run", "experiment", "status", "steps", "lr", "intervals"]))


def cmd_plan(args) -> None:
    from orchestrator.plan import make_plan, render_plan

    plan = make_plan(args.overrides)
    print(json.dumps(plan, indent=2) if args.json else render_plan(plan))
