"""`orchestrator runs`: list the runs in the registry (a table, or JSON)."""
from __future__ import annotations

import json

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("runs", help="list the runs in the registry")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--json", action="store_true", help="every run with its fields and intervals, as JSON")


def run(args) -> None:
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
