"""`orchestrator doctor`: check the registry against the disk (artifacts, dead `running` runs, orphans)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check the registry against the disk: artifacts, dead `running` runs, orphans")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--outputs", type=Path, help="the runs' output folder (default: each run's own output_dir)")
    p.add_argument("--repair", action="store_true", help="record dead `running` runs as `interrupted` (statuses only)")
    p.add_argument("--json", action="store_true")


def run(args) -> None:
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
