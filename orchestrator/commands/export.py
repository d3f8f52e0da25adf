"""`orchestrator export RUN [--merge]`: a run's adapter as a folder, or folded into the base model
(loadable by plain transformers, no peft). The only export that loads torch."""
from __future__ import annotations

import json
from pathlib import Path

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("export", help="a run's adapter as a folder; --merge folds it into the base model "
                                      "(loadable by plain transformers, no peft)")
    p.add_argument("run", help="run id (see `orchestrator runs`)")
    p.add_argument("--merge", action="store_true", help="merge_and_unload + save_pretrained, processor included")
    p.add_argument("--adapter", choices=("best", "last"), default="best",
                   help="lora_adapter_best (default) or lora_adapter_last")
    p.add_argument("--out", type=Path, help="folder to write (default: <run folder>/merged_model or /adapter_export)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--json", action="store_true")


def run(args) -> None:
    from orchestrator.exporting.merge import export_run

    store = open_existing(args.registry)
    try:
        info = export_run(store, args.run, merge=args.merge, out=args.out, which=args.adapter, device=args.device)
    finally:
        store.close()
    if args.json:
        print(json.dumps(info.__dict__))
    else:
        what = "merged model" if info.merged else "adapter"
        print(f"{info.path}: {what} of {info.run_id} ({info.adapter}, step {info.step})")
