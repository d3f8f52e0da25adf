"""One module per subcommand: each has `register(subparsers)` (adds its parser) and `run(args)`.

The module's name is the subcommand's (`_` for `-`: `export_mlflow.py` is `export-mlflow`). To add
one, write `orchestrator/commands/NAME.py` and add its name to COMMANDS (one line). Modules import nothing heavy at the top: the whole parser is
built for every subcommand, and `orchestrator report --help` must not load torch.
The training entry (`orchestrator [run] +exp=...`, Hydra) is `train.py`, not a subcommand.
"""
from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = [
    "report",
    "runs",
    "plan",
    "eval",
    "transcribe",
    "manifest",
    "annotate",
    "record",
    "resume",
    "doctor",
    "export",
    "export_mlflow",
    "export_tensorboard",
    "tune",
    "build_checkpoint",
    "watch",
]

DEFAULT_REGISTRY = "sqlite:///registry.db"
EXIT_USER_ERROR = 2  # a mistake the user can fix (bad config, bad data, bad arguments)


def names() -> list[str]:
    """The subcommands as typed on the command line."""
    return [module.replace("_", "-") for module in COMMANDS]


def load(name: str) -> ModuleType:
    """The module of subcommand `name` (as typed, or as in COMMANDS)."""
    return importlib.import_module(f"orchestrator.commands.{name.replace('-', '_')}")


def open_existing(url: str):
    """The registry at `url`; a SQLite file that does not exist is an error, not a new database."""
    from pathlib import Path

    from orchestrator.errors import RegistryError
    from orchestrator.registry import Store

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise RegistryError(f"no registry at {url}", where="--registry",
                            fix="run an experiment first (it creates registry.db) or pass --registry URL")
    return Store(url)
