"""`orchestrator export-tensorboard`: each run's intervals as TensorBoard scalars (tensorboardX,
the `tensorboard` extra), one event file per run under --logdir."""
from __future__ import annotations

from pathlib import Path

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("export-tensorboard", help="write each run's intervals as TensorBoard scalars "
                                                  "(one event file per run under --logdir)")
    p.add_argument("--logdir", required=True, type=Path)
    p.add_argument("--run", action="append", metavar="RUN_ID", help="only these runs (repeatable; default: all)")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)


def run(args) -> None:
    from orchestrator.exporting.tensorboard import export_runs

    store = open_existing(args.registry)
    try:
        written = export_runs(store.list_runs(run_ids=args.run) if args.run else store.list_runs(), args.logdir)
    finally:
        store.close()
    print(f"{args.logdir}: {len(written)} runs")
