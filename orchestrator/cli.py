"""Command line: `orchestrator [run] +exp=NAME [overrides]`, `report`, `runs`, `plan`.

Thin on purpose: parse, dispatch, and turn known errors into one line on stderr with a non-zero
exit (tracebacks only with --debug or HYDRA_FULL_ERROR=1). Heavy imports (torch) happen only on
the paths that train or load a model, so `report` and `runs` start fast.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_REGISTRY = "sqlite:///registry.db"
SUBCOMMANDS = ("report", "runs", "plan", "eval", "transcribe", "manifest", "annotate", "record", "resume", "doctor", "tune")
EXIT_USER_ERROR = 2
HYDRA_INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i")
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
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): a run that had started is recorded `interrupted`; the same command resumes it",
              file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - never a traceback unless asked for (--debug)
        if debug:
            raise
        fail_unexpected(exc)


def fail_unexpected(exc: Exception) -> None:
    """One line for an exception nobody turned into an OrchestratorError: Hydra/OmegaConf
    composition errors read as config errors (exit 2); anything else is a fault or a bug (exit 1)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        fail(hydra_error_line(exc))
    text = " ".join(str(exc).split()) or "no message"
    print(f"error: unexpected {type(exc).__name__}: {text[:500]} (fix: run again with --debug for the traceback, "
          "and report it if it is not a fault of the machine)", file=sys.stderr)
    sys.exit(1)


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
    from orchestrator.config.paths import declared_experiments

    if isinstance(exc, MissingConfigException) and "exp/" in str(exc):
        name = str(exc).split("exp/", 1)[1].split("'", 1)[0]
        return f"+exp={name}: unknown experiment (fix: use one of {', '.join(declared_experiments())}; files in conf/exp/)"
    lines = [str(exc).split("\n\n")[0].replace("\n", " ")]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause):
        lines.append(str(cause).splitlines()[0])
    return " — ".join(lines) + " (fix: check the key's spelling and group names in conf/; --cfg job shows the config)"


def run_hydra(argv: list[str], debug: bool) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from orchestrator.config import spec as specs

    if "--rerun" in argv:  # the flag form of rerun=true
        argv = [a for a in argv if a != "--rerun"] + ["rerun=true"]
    overrides = [a for a in argv if not a.startswith("-")]
    multirun = "-m" in argv or "--multirun" in argv
    # help and config printing need no data on disk: Hydra answers them, nothing is validated
    informational = any(a in HYDRA_INFO_FLAGS or a.startswith("--info") for a in argv)
    first = None
    try:  # validate the composition up front: one clear line instead of Hydra's report
        from orchestrator.config.launchers import check_exp_launchers

        if not informational:
            check_exp_launchers(overrides, multirun)
            first = specs.build_spec(specs.compose(first_of_sweeps(overrides)))
    except Exception as exc:  # noqa: BLE001 - any composition failure is a user error here
        from orchestrator.errors import OrchestratorError

        if debug:
            raise
        fail(exc.one_line() if isinstance(exc, OrchestratorError) else hydra_error_line(exc))
    if first is not None:
        check_before_torch(first)

    @hydra.main(config_path=str(specs.CONF_DIR), config_name="config", version_base="1.3")
    def task(cfg) -> None:
        from orchestrator.errors import OrchestratorError

        try:
            hydra_cfg = HydraConfig.get()
            spec = specs.build_spec(cfg, hydra_cfg.runtime.choices.get("exp"))
            multirun = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
            train_one(spec, sweep_id=f"{spec.experiment}-{Path(hydra_cfg.sweep.dir).name}" if multirun else None)
        except OrchestratorError as exc:
            if debug:
                raise
            fail(exc.one_line())
        except Exception as exc:  # noqa: BLE001 - Hydra would print a traceback; the run is recorded failed
            if debug:
                raise
            fail_unexpected(exc)

    specs.register()
    sys.argv = [sys.argv[0], *argv]
    task()


def check_before_torch(spec) -> None:
    """Refuse bad data, an output folder that cannot be written and a registry that cannot be
    opened in seconds, before torch loads. The manifests' audio is decoded here once; the run
    reuses the result (manifest.load_split keeps it while the files are unchanged). The registry
    is created/migrated here, once, before a sweep's jobs open it."""
    from orchestrator.artifacts.atomic import check_output_dir
    from orchestrator.data.manifest import load_splits
    from orchestrator.registry import Store

    load_splits(spec.manifests, spec.data)
    check_output_dir(spec.output_dir)
    Store(spec.registry.url).close()


def train_one(spec, sweep_id: str | None = None) -> str:
    from orchestrator.training import loop as train
    from orchestrator.registry import Store

    store = Store(spec.registry.url)
    try:
        run_id = train.run(spec, store, sweep_id=sweep_id)
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
    p.add_argument("--run", action="append", metavar="RUN_ID",
                   help="print this run's verdict section instead (repeatable): EXPERIMENTS.md has the most recent runs'")
    p = sub.add_parser("runs", help="list the runs in the registry")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--json", action="store_true", help="every run with its fields and intervals, as JSON")
    p = sub.add_parser("plan", help="compose, validate and resolve targets without training")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +exp=exp_2_5_v2_universal_lora")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("eval", help="WER of a saved adapter on a manifest, with its run's settings")
    p.add_argument("--adapter", required=True, type=Path, help="adapter folder, e.g. outputs/<run>/lora_adapter_best")
    p.add_argument("--manifest", required=True, type=Path, help="JSONL manifest to evaluate")
    p.add_argument("--model", help="base model id or folder (default: the run's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", action="store_true",
                   help="wer (a fraction, as in the registry), eval_loss, utterances, manifest, adapter")
    p = sub.add_parser("transcribe", help="decode audio files with a saved adapter: one `path<TAB>text` line each")
    p.add_argument("--adapter", required=True, type=Path)
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--model", help="base model id or folder (default: the run's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p = sub.add_parser("manifest", help="validate, summarise or expand JSONL manifests")
    tools = p.add_subparsers(dest="manifest_command", required=True)
    t = tools.add_parser("validate", help="every problem with its line; exit 2 if any is an error")
    t.add_argument("file", type=Path)
    t = tools.add_parser("stats", help="utterances, hours, duration percentiles, words")
    t.add_argument("file", type=Path)
    t.add_argument("--json", action="store_true")
    t = tools.add_parser("expand", help="a seeded, duration-stratified evaluation manifest from a pool")
    t.add_argument("--pool", required=True, type=Path, help="manifest to draw from")
    t.add_argument("--out", required=True, type=Path, help="manifest to write")
    t.add_argument("--size", type=int, default=500, help="utterances to draw (default: %(default)s)")
    t.add_argument("--exclude", nargs="+", action="extend", default=[], type=Path, metavar="MANIFEST",
                   help="training manifests: pool utterances sharing audio bytes or normalised text are dropped")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--bins", type=int, default=10, help="duration quantile bins (default: %(default)s)")
    p = sub.add_parser("annotate", help="record a person's judgment of a run; the report shows it as its status")
    p.add_argument("run", help="run id (see `orchestrator runs`)")
    p.add_argument("--status", help="e.g. flawed, failed, passed, superseded")
    p.add_argument("--note", help="why, shown in the report")
    p.add_argument("--clear", action="store_true", help="remove the annotation")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p = sub.add_parser("record", help="enter a run made outside the tool (marked external); prints its id")
    p.add_argument("--experiment", required=True)
    p.add_argument("--model", required=True, help="model id")
    p.add_argument("--steps", required=True, type=int)
    p.add_argument("--lr", required=True, type=float)
    p.add_argument("--targets", required=True, help="what was adapted, as text")
    p.add_argument("--dora", action="store_true")
    p.add_argument("--wer", action="append", default=[], metavar="STEP:DOMAIN:HELDOUT",
                   help="WERs in percent at a step (repeatable), e.g. 0:12.40:4.79; '-' for a missing one")
    p.add_argument("--status", help="annotation, e.g. flawed (default: the status is derived from the verdicts)")
    p.add_argument("--note", help="annotation note, shown in the report")
    p.add_argument("--run-id", help="default: <experiment>-<time>-<random>")
    p.add_argument("--registry", default=DEFAULT_REGISTRY, help="created if missing (default: %(default)s)")
    p = sub.add_parser("resume", help="continue interrupted runs (every one of a sweep, or by id) from their checkpoints")
    p.add_argument("runs", nargs="*", metavar="RUN_ID", help="runs to continue (see `orchestrator runs`)")
    p.add_argument("--sweep", help="continue every interrupted run of this sweep")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p = sub.add_parser("doctor", help="check the registry against the disk: artifacts, dead `running` runs, orphans")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--outputs", type=Path, help="the runs' output folder (default: each run's own output_dir)")
    p.add_argument("--repair", action="store_true", help="record dead `running` runs as `interrupted` (statuses only)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("tune", help="search a declared space until a run passes the criteria, within a budget",
                       description="settings: conf/tune/<exp>.yaml, else conf/tune/default.yaml (see its comments)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="+exp=NAME tune.budget_runs=N [tune.workers=K] ...")
    args = parser.parse_args(argv)
    if args.command == "tune":
        from orchestrator.tuning.campaign import main as tune

        return tune(args.overrides)
    if args.command == "doctor":
        return cmd_doctor(args)
    {"report": cmd_report, "runs": cmd_runs, "plan": cmd_plan,
     "eval": cmd_eval, "transcribe": cmd_transcribe, "manifest": cmd_manifest,
     "annotate": cmd_annotate, "record": cmd_record, "resume": cmd_resume}[args.command](args)


def open_existing(url: str):
    """The registry at `url`; a SQLite file that does not exist is an error, not a new database."""
    from orchestrator.errors import RegistryError
    from orchestrator.registry import Store

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise RegistryError(f"no registry at {url}", where="--registry",
                            fix="run an experiment first (it creates registry.db) or pass --registry URL")
    return Store(url)


def cmd_report(args) -> None:
    with _collector_paused():
        from orchestrator.config.paths import DEFAULT_CRITERIA, declared_experiments
        from orchestrator.report import run_sections, write_report
        from orchestrator.config.criteria import load_criteria

        store = open_existing(args.registry)
        try:
            criteria = load_criteria(DEFAULT_CRITERIA)
            if args.run:
                print(run_sections(store, args.run, criteria=criteria))
                return
            count = write_report(store, args.output, experiments=declared_experiments(), criteria=criteria)
        finally:
            store.close()
    print(f"{args.output}: {count} runs")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a block: a report of 10,000 runs (and the imports
    before it) builds a few million objects, none in a reference cycle, and the collector would
    walk them over and over, a fifth of the command's time."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def cmd_annotate(args) -> None:
    from orchestrator.errors import OrchestratorError

    if args.clear == bool(args.status):
        raise OrchestratorError("give --status (and --note), or --clear", where="annotate",
                                fix='e.g. orchestrator annotate RUN --status flawed --note "why"')
    store = open_existing(args.registry)
    try:
        store.annotate(args.run, None if args.clear else args.status, args.note)
    finally:
        store.close()
    print(f"{args.run}: {'annotation cleared' if args.clear else args.status}")


def parse_wer_point(text: str) -> dict:
    """`STEP:DOMAIN:HELDOUT` with WERs in percent ('-' or empty: not reported) -> interval
    fields with WERs as fractions, e.g. "600:12.64:4.92" -> step 600, 0.1264, 0.0492."""
    from orchestrator.errors import ConfigError

    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        step = int(parts[0])
        wers = [None if p.strip() in ("", "-") else float(p) / 100 for p in parts[1:]]
        if step < 0 or any(w is not None and not 0 <= w < 100 for w in wers):
            raise ValueError
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as STEP:DOMAIN:HELDOUT", where="--wer",
                          fix="a step >= 0 and WERs in percent, e.g. --wer 600:12.64:4.92") from None
    return {"step": step, "domain_wer": wers[0], "heldout_wer": wers[1]}


def cmd_record(args) -> None:
    from orchestrator.config.paths import DEFAULT_CRITERIA
    from orchestrator.registry import Store
    from orchestrator.config.criteria import load_criteria

    points = [parse_wer_point(text) for text in args.wer]
    criteria = load_criteria(DEFAULT_CRITERIA)
    store = Store(args.registry)
    try:
        run = store.record_external(
            experiment=args.experiment, model_id=args.model, steps=args.steps, lr=args.lr,
            target_summary=args.targets, dora=args.dora, intervals=points, annotation_status=args.status,
            annotation_note=args.note, criteria=criteria.as_dict(), run_id=args.run_id)
    finally:
        store.close()
    print(run.id)


def cmd_doctor(args) -> None:
    from orchestrator.registry.doctor import diagnose

    store = open_existing(args.registry)
    try:
        diagnosis = diagnose(store, outputs=args.outputs, repair=args.repair)
    finally:
        store.close()
    if args.json:
        print(json.dumps(diagnosis.as_dict(), indent=2))
    else:
        for finding in diagnosis.findings:
            print(finding.line())
        print(diagnosis.summary())
    if not diagnosis.healthy:
        sys.exit(1)


def cmd_runs(args) -> None:
    from orchestrator.registry.liveness import settle

    store = open_existing(args.registry)
    runs = settle(store.list_runs())  # `running` with no live process reads `interrupted`
    store.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], indent=2))
        return
    from tabulate import tabulate

    rows = [(r.id, r.experiment, r.status, r.steps, f"{r.lr:g}", len(r.intervals), r.sweep_id or "")
            for r in runs]
    print(tabulate(rows, headers=["run", "experiment", "status", "steps", "lr", "intervals", "sweep"]))


def cmd_resume(args) -> None:
    from orchestrator.training import resume

    logging.basicConfig(format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    store = open_existing(args.registry)
    try:
        runs = resume.select(store, args.runs, args.sweep)
        if not runs:
            print(f"sweep {args.sweep}: no interrupted run to resume")
            return
        for run_id in resume.resume(store, runs, registry_url=args.registry):
            print(f"{run_id}: {store.get_run(run_id).status}")
    finally:
        store.close()


def cmd_plan(args) -> None:
    from orchestrator.training.plan import make_plan, render_plan

    plan = make_plan(args.overrides)
    print(json.dumps(plan, indent=2) if args.json else render_plan(plan))


# --- eval, transcribe, manifest (the work is in orchestrator.inference / manifest / manifest_tools) ---

def cmd_eval(args) -> None:
    from orchestrator.training.inference import evaluate_manifest, load_adapter

    loaded = load_adapter(args.adapter, model_id=args.model, device=args.device)
    result = evaluate_manifest(loaded, args.manifest, progress=not args.json)
    if args.json:
        print(json.dumps({"wer": result.wer, "eval_loss": result.loss, "utterances": result.n,
                          "manifest": str(args.manifest), "adapter": str(args.adapter)}))
    else:
        print(f"WER {100 * result.wer:.2f}%  utterances {result.n}  eval loss {result.loss:.4f}  ({args.manifest})")


def cmd_transcribe(args) -> None:
    from orchestrator.data.audio import audio_info

    for path in args.audio:  # fail before loading a model
        audio_info(path)
    from orchestrator.training.inference import load_adapter, transcribe

    loaded = load_adapter(args.adapter, model_id=args.model, device=args.device)
    for path, text in zip(args.audio, transcribe(loaded, args.audio)):
        print(f"{path}\t{' '.join(text.splitlines()).replace(chr(9), ' ')}")


def cmd_manifest(args) -> None:
    if args.manifest_command == "validate":
        from orchestrator.data.manifest import validate_manifest

        problems = validate_manifest(args.file)
        for problem in problems:
            print(problem.report_line())
        errors = sum(p.is_error for p in problems)
        print(f"{args.file}: {errors} error(s), {len(problems) - errors} info(s)"
              + ("" if errors else " - OK"))
        if errors:
            sys.exit(EXIT_USER_ERROR)
    elif args.manifest_command == "stats":
        from orchestrator.data.manifest_tools import manifest_stats, render_stats

        stats = manifest_stats(args.file)
        print(json.dumps(stats, indent=2) if args.json else render_stats(stats))
    else:
        from orchestrator.data.manifest_tools import expand_manifest

        print(expand_manifest(args.pool, args.out, size=args.size, exclude=args.exclude, seed=args.seed,
                              bins=args.bins).summary())
