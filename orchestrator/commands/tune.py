"""`orchestrator tune`: search a declared space until a run passes the criteria, within a budget.
The work is in orchestrator/tuning/ (campaign.main)."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("tune", help="search a declared space until a run passes the criteria, within a budget",
                       description="settings: conf/tune/<exp>.yaml, else conf/tune/default.yaml (see its comments)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="+exp=NAME tune.budget_runs=N [tune.workers=K] ...")


def run(args) -> None:
    from orchestrator.tuning.campaign import main

    main(args.overrides)
