"""The export subcommands: `export`, `export-mlflow`, `export-tensorboard` (argparse + dispatch).

Registered by orchestrator.cli; each command imports its work lazily, so `orchestrator --help`
stays fast and only `export` loads torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_REGISTRY = "sqlite:///registry.db"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a run's adapter as a folder; --merge folds it into the base model "
                                      "(loadable by plain transformers, no peft)")
    p.add_argument("run", help="run id (see `orchestrator runs`)")
    p.add_argument("--merge", action="store_true", help="merge_and_unload + save_pretrained, processor included")
    p.add_argument("--adapter", choices=("best", "last"), default="best",
                   help="lora_adapter_best (default) or lora_adapter_last")
    p.add_argument("--out", type=Path, help="folder to write (default: <run folder>/merged_model or /adapter_export)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("export-mlflow", help="copy runs into an MLflow tracking store: params, every interval as "
                                             "step metrics, verdicts as tags, the adapter as an artifact")
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///mlflow.db or http://host:5000")
    p.add_argument("--run", action="append", metavar="RUN_ID", help="only these runs (repeatable; default: all)")
    p.add_argument("--experiment", help="MLflow experiment for every run (default: each run's experiment name)")
    p.add_argument("--artifact-root", help="new experiments keep artifacts in ROOT/<experiment> (default: "
                                           "mlartifacts/ beside a sqlite store's file, else the server's)")
    p.add_argument("--no-artifacts", action="store_true", help="do not upload adapter folders")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p = sub.add_parser("export-tensorboard", help="write each run's intervals as TensorBoard scalars "
                                                  "(one event file per run under --logdir)")
    p.add_argument("--logdir", required=True, type=Path)
    p.add_argument("--run", action="append", metavar="RUN_ID", help="only these runs (repeatable; default: all)")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)


def _open(url: str):
    from orchestrator.cli import open_existing

    return open_existing(url)


def cmd_export(args) -> None:
    from orchestrator.exporting.merge import export_run

    store = _open(args.registry)
    try:
        info = export_run(store, args.run, merge=args.merge, out=args.out, which=args.adapter, device=args.device)
    finally:
        store.close()
    if args.json:
        print(json.dumps(info.__dict__))
    else:
        what = "merged model" if info.merged else "adapter"
        print(f"{info.path}: {what} of {info.run_id} ({info.adapter}, step {info.step})")


def _runs(store, run_ids):
    return store.list_runs(run_ids=run_ids) if run_ids else store.list_runs()


def cmd_export_mlflow(args) -> None:
    from orchestrator.exporting.mlflow import export_runs

    store = _open(args.registry)
    try:
        exported = export_runs(store, _runs(store, args.run), args.tracking_uri, experiment=args.experiment,
                               artifact_root=args.artifact_root, artifacts=not args.no_artifacts)
    finally:
        store.close()
    for run_id, mlflow_id in exported.items():
        print(f"{run_id}\t{mlflow_id}")
    print(f"{args.tracking_uri}: {len(exported)} runs")


def cmd_export_tensorboard(args) -> None:
    from orchestrator.exporting.tensorboard import export_runs

    store = _open(args.registry)
    try:
        written = export_runs(_runs(store, args.run), args.logdir)
    finally:
        store.close()
    print(f"{args.logdir}: {len(written)} runs")


COMMANDS = {"export": cmd_export, "export-mlflow": cmd_export_mlflow, "export-tensorboard": cmd_export_tensorboard}
