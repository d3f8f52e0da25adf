"""The resumable state of a run, written atomically at every evaluation interval (and on Ctrl-C).

One file, `outputs/<run_id>/checkpoint.pt`: adapter weights, optimizer, scheduler, torch RNG (CPU
and CUDA), how many training batches were consumed and the losses of the interval so far (the
best interval is re-derived from the registry). Written by artifacts.atomic.atomic_write (a
temporary file, fsynced, renamed over the old one, the folder fsynced): a run killed at any
moment finds the last complete checkpoint intact, and a write that fails (disk full, file too large, read-only folder) leaves
the previous one in place and raises WriteError.

`InterruptGuard` makes Ctrl-C during a training step wait for the step's end, so the trainer can
checkpoint a consistent state, record the run `interrupted` and exit; a second Ctrl-C stops at once.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from orchestrator.artifacts.atomic import atomic_write
from orchestrator.artifacts.run_folder import RunFolder
from orchestrator.errors import WriteError, os_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resumed:
    step: int
    batches_consumed: int
    interval_losses: tuple[float, ...] = ()  # training losses since the last evaluation (Ctrl-C mid-interval)


def save(run_dir: Path, *, step: int, model, optimizer, scheduler, batches_consumed: int,
         interval_losses: list[float] | tuple[float, ...] = ()) -> None:
    """Write the checkpoint atomically; WriteError (previous checkpoint intact) if it cannot be."""
    state = {"step": step, "adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "batches_consumed": batches_consumed, "interval_losses": [float(x) for x in interval_losses]}
    dest = RunFolder.at(run_dir).checkpoint
    try:
        atomic_write(dest, lambda fh: torch.save(state, fh))
    except Exception as exc:  # KeyboardInterrupt, SystemExit: not a write failure, they propagate
        previous = "the previous checkpoint is intact" if dest.exists() else "there is no earlier checkpoint"
        raise WriteError(f"cannot write the checkpoint of step {step} ({os_reason(exc)}); {previous}",
                         where=str(dest),
                         fix="free disk space or make the output folder writable, then run the command again") from exc


def exists(run_dir: Path) -> bool:
    return RunFolder.at(run_dir).checkpoint.exists()


def load(run_dir: Path, *, model, optimizer, scheduler) -> Resumed:
    state = torch.load(RunFolder.at(run_dir).checkpoint, weights_only=False)
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Resumed(state["step"], state["batches_consumed"], tuple(state.get("interval_losses", ())))


class InterruptGuard:
    """While installed, a Ctrl-C (SIGINT) that arrives inside `step()` is held until the step
    ends and shows as `requested`; outside a step, or a second time, it raises KeyboardInterrupt
    at once. Installs its handler only in the main thread (where Python delivers signals)."""

    def __init__(self) -> None:
        self.requested = False
        self._in_step = False
        self._previous = None

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self._in_step and not self.requested:
            self.requested = True
            log.warning("Ctrl-C: finishing this step, then checkpointing (Ctrl-C again to stop at once)")
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        self._in_step = True
        try:
            yield
        finally:
            self._in_step = False
