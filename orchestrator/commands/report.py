"""`orchestrator report`: rebuild the generated blocks of EXPERIMENTS.md (never imports torch)."""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild the generated blocks of EXPERIMENTS.md from the registry")
    p.add_argument("--registry", default=DEFAULT_REGISTRY, help="SQLAlchemy URL (default: %(default)s)")
    p.add_argument("--output", default="EXPERIMENTS.md", type=Path)
    p.add_argument("--run", action="append", metavar="RUN_ID",
                   help="print this run's verdict section instead (repeatable): EXPERIMENTS.md has the most recent runs'")


def run(args) -> None:
    with _collector_paused():
        from orchestrator.config.criteria import load_criteria
        from orchestrator.config.paths import DEFAULT_CRITERIA, declared_experiments
        from orchestrator.report import run_sections, write_report

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
