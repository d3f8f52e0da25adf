"""`orchestrator annotate`: record a person's judgment of a run; the report shows it as its status."""
from __future__ import annotations

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("annotate", help="record a person's judgment of a run; the report shows it as its status")
    p.add_argument("run", help="run id (see `orchestrator runs`)")
    p.add_argument("--status", help="e.g. flawed, failed, passed, superseded")
    p.add_argument("--note", help="why, shown in the report")
    p.add_argument("--clear", action="store_true", help="remove the annotation")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)


def run(args) -> None:
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
