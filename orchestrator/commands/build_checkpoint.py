"""`orchestrator build-checkpoint RECIPE DIR`: write a project-built checkpoint folder.

The recipes are the ones model presets name in `build:` (training/modeling.py BUILDERS):
`moonshine_streaming_tiny` is UsefulSensors/moonshine-streaming-tiny's architecture, vocabulary
size and file layout with random weights (training/hub_checkpoint.py), `tiny_random` the tests'
small model. A preset builds its folder on first use; this command builds one anywhere, e.g. to
pass as `model.id=DIR` or to copy to a machine that cannot reach the hub.
"""
from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("build-checkpoint", help="write a project-built checkpoint folder (e.g. the hub-shaped "
                                                "moonshine-streaming-tiny with random weights) to DIR")
    p.add_argument("recipe", metavar="RECIPE", help="a build recipe: moonshine_streaming_tiny or tiny_random")
    p.add_argument("dir", type=Path, metavar="DIR", help="folder to write (new, or empty)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0): same seed, same bytes")
    p.add_argument("--json", action="store_true")


def run(args) -> None:
    from orchestrator.errors import ConfigError, WriteError

    if args.dir.exists() and (not args.dir.is_dir() or any(args.dir.iterdir())):  # before torch loads
        raise WriteError("exists and is not an empty folder", where=str(args.dir),
                         fix="remove it, or name a new folder")
    from orchestrator.training.modeling import BUILDERS, build

    if args.recipe not in BUILDERS:
        raise ConfigError(f"unknown build recipe {args.recipe!r}", where="build-checkpoint RECIPE",
                          fix=f"use one of {sorted(BUILDERS)}")
    path = build(args.recipe, args.dir, seed=args.seed)
    info = summary(path)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{path}: {args.recipe}, {info['parameters']:,} parameters (random, seed {args.seed}), vocabulary "
              f"{info['vocab_size']}, {info['bytes'] / 2**20:.1f} MiB; use it with model.id={path}")


def summary(path: Path) -> dict:
    """What was written, read back from the folder's own files (no model is loaded)."""
    from math import prod

    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as f:
        parameters = sum(prod(f.get_slice(k).get_shape()) for k in f.keys())
    config = json.loads((path / "config.json").read_text())
    return {"path": str(path), "parameters": parameters, "vocab_size": config["vocab_size"],
            "files": sorted(p.name for p in path.iterdir()), "bytes": sum(p.stat().st_size for p in path.iterdir())}
