"""`orchestrator plan`: compose, validate and resolve targets without training."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("plan", help="compose, validate and resolve targets without training")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +exp=exp_2_5_v2_universal_lora")
    p.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                   help="a config folder of your own on Hydra's search path (its exp/*.yaml are experiments)")
    p.add_argument("--json", action="store_true")


def run(args) -> None:
    from orchestrator.config.compose import with_config_dirs
    from orchestrator.training.plan import make_plan, render_plan

    plan = make_plan(with_config_dirs(args.overrides, args.config_dir))
    print(json.dumps(plan, indent=2) if args.json else render_plan(plan))
