"""`orchestrator resume`: continue interrupted runs (every one of a sweep, or by id) from their checkpoints."""
from __future__ import annotations

import logging

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("resume", help="continue interrupted runs (every one of a sweep, or by id) from their checkpoints")
    p.add_argument("runs", nargs="*", metavar="RUN_ID", help="runs to continue (see `orchestrator runs`)")
    p.add_argument("--sweep", help="continue every interrupted run of this sweep")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)


def run(args) -> None:
    from orchestrator.training import resume

    logging.basicConfig(format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("orchestrator").setLevel(logging.INFO)
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
