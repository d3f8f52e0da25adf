"""`orchestrator export-mlflow`: copy runs into an MLflow tracking store (params, every interval as
step metrics, verdicts as tags, the adapter as an artifact). Needs the `mlflow` extra, not torch."""
from __future__ import annotations

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("export-mlflow", help="copy runs into an MLflow tracking store: params, every interval as "
                                             "step metrics, verdicts as tags, the adapter as an artifact")
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///mlflow.db or http://host:5000")
    p.add_argument("--run", action="append", metavar="RUN_ID", help="only these runs (repeatable; default: all)")
    p.add_argument("--experiment", help="MLflow experiment for every run (default: each run's experiment name)")
    p.add_argument("--artifact-root", help="new experiments keep artifacts in ROOT/<experiment> (default: "
                                           "mlartifacts/ beside a sqlite store's file, else the server's)")
    p.add_argument("--no-artifacts", action="store_true", help="do not upload adapter folders")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)


def run(args) -> None:
    from orchestrator.exporting.mlflow import export_runs

    store = open_existing(args.registry)
    try:
        runs = store.list_runs(run_ids=args.run) if args.run else store.list_runs()
        exported = export_runs(store, runs, args.tracking_uri, experiment=args.experiment,
                               artifact_root=args.artifact_root, artifacts=not args.no_artifacts)
    finally:
        store.close()
    for run_id, mlflow_id in exported.items():
        print(f"{run_id}\t{mlflow_id}")
    print(f"{args.tracking_uri}: {len(exported)} runs")
