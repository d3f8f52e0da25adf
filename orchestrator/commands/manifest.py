"""`orchestrator manifest validate|stats|expand` (the work is in orchestrator.data)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.commands import EXIT_USER_ERROR


def register(sub) -> None:
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


def run(args) -> None:
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
