"""Command line: `orchestrator [run] +exp=NAME [overrides]`, and the subcommands of commands/.

Thin on purpose: parse, dispatch, and turn known errors into one line on stderr with a non-zero
exit (tracebacks only with --debug or HYDRA_FULL_ERROR=1). Each subcommand is a module of
orchestrator/commands/ (listed in commands.COMMANDS); the training entry is commands/train.py.
Heavy imports (torch) happen only on the paths that train or load a model, so `report` and
`runs` start fast.
"""
from __future__ import annotations

import argparse
import os
import sys

from orchestrator.commands import EXIT_USER_ERROR, COMMANDS, load, names

SUBCOMMANDS = tuple(names())  # as typed; anything else goes to the training entry (Hydra)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not argv:
        fail(f"nothing to do (fix: orchestrator +exp=NAME to train, or one of: {', '.join(SUBCOMMANDS)}; "
             "--help lists them)")
    if argv in (["--help"], ["-h"]):  # the subcommands first, then the training entry's groups (Hydra's help)
        print(build_parser().format_help().replace("usage: orchestrator", "usage: orchestrator [run] +exp=NAME "
                                                   "[overrides] | orchestrator", 1))
    try:
        if argv[0] in SUBCOMMANDS:
            subcommand(argv)
        else:
            from orchestrator.commands import train

            train.main(argv[1:] if argv[:1] == ["run"] else argv, debug)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): a run that had started is recorded `interrupted`; the same command resumes it",
              file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - never a traceback unless asked for (--debug)
        if debug:
            raise
        exit_on(exc)


def exit_on(exc: Exception) -> None:
    """One line for an error, then exit: the user's mistakes (OrchestratorError, and Hydra/OmegaConf
    composition errors, read as config errors) exit 2; anything else is a fault or a bug (exit 1)."""
    from orchestrator.errors import OrchestratorError

    if isinstance(exc, OrchestratorError):
        fail(exc.one_line())
    if type(exc).__module__.split(".")[0] in ("hydra", "omegaconf"):  # only then import Hydra
        from orchestrator.config.compose import config_error

        error = config_error(exc)
        if error is not None:
            fail(error.one_line())
    text = " ".join(str(exc).split()) or "no message"
    print(f"error: unexpected {type(exc).__name__}: {text[:500]} (fix: run again with --debug for the traceback, "
          "and report it if it is not a fault of the machine)", file=sys.stderr)
    sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator", description="LoRA/DoRA fine-tuning campaigns for Moonshine. Train with "
        "`orchestrator +exp=NAME [overrides]` (Hydra: its config groups are listed by `orchestrator --help`), "
        "sweep with -m, or use a subcommand (`orchestrator SUBCOMMAND --help`).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        load(name).register(sub)
    return parser


def subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    load(args.command).run(args)
