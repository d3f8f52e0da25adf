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
    p.add_argument("--no-cache", action="store_true",
                   help="judge and render every run anew, neither reading nor writing experiments/.report_cache.json "
                        "(beside the output), which keeps what runs that did not change rendered to")


def run(args) -> None:
    with _collector_paused():
        from orchestrator.config.criteria import load_criteria
        from orchestrator.config.paths import DEFAULT_CRITERIA, declared_experiments
        from orchestrator.report import run_sections, write_report
        from orchestrator.report.cache import ReportCache

        store = open_existing(args.registry)
        try:
            criteria = load_criteria(DEFAULT_CRITERIA)
            if args.run:
                print(run_sections(store, args.run, criteria=criteria))
                return
            cache = None if args.no_cache else ReportCache.beside(args.output)
            count = write_report(store, args.output, experiments=declared_experiments(), criteria=criteria, cache=cache)
        finally:
            store.close()
    kept = "" if cache is None else f" ({cache.rendered()} judged anew, {count - cache.rendered()} kept in {cache.path})"
    print(f"{args.output}: {count} runs{kept}")


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
