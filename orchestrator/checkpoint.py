"""The resumable state of a run, written atomically at every evaluation interval.

One file, `outputs/<run_id>/checkpoint.pt`: adapter weights, optimizer, scheduler, torch RNG and
how many training batches were consumed (the best interval is re-derived from the registry). A
run killed at any moment finds the last complete checkpoint intact (temp file, fsync, rename).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Resumed:
    step: int
    batches_consumed: int


def save(run_dir: Path, *, step: int, model, optimizer, scheduler, batches_consumed: int) -> None:
    state = {"step": step, "adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "batches_consumed": batches_consumed}
    tmp = run_dir / (CHECKPOINT + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, run_dir / CHECKPOINT)


def exists(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).exists()


def load(run_dir: Path, *, model, optimizer, scheduler) -> Resumed:
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return Resumed(state["step"], state["batches_consumed"])
