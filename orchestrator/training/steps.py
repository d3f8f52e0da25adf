"""The optimizer step, in the run's precision, with no host sync per step.

A GPU runs ahead of Python as long as nothing asks it for a value: `loss.item()` or `float(grad_norm)`
every step would make the host wait for the step's last kernel before queueing the next batch. So
each step's loss and gradient norm stay on the device, and `read()` fetches all the steps since the
last read in one transfer: at every log point (optim.log_every), evaluation interval, Ctrl-C and the
last step. That is also where a non-finite loss or gradient fails the run, naming the first step it
happened at; the steps after it (fewer than log_every) ran on poisoned weights, which no interval,
checkpoint or adapter ever sees, because each of those reads first.

fp16 goes through a gradient scaler: it skips a step whose scaled gradients overflowed (and lowers
its scale), so a non-finite gradient there is counted as a skipped step, not a failure; the scaler
itself reads one flag per step (torch.amp.GradScaler.step).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from orchestrator.errors import OrchestratorError
from orchestrator.training import precision as precisions


@dataclass(frozen=True)
class StepRecord:
    step: int
    loss: float  # the step's training loss (mean over its grad_accum micro-batches)
    grad_norm: float  # before clipping
    lr: float  # the LR the step used


class Steps:
    """Optimizer steps of one run: `run(step, inputs)` queues one, `read()` fetches what they measured."""

    def __init__(self, model, optimizer, scheduler, params, *, grad_accum: int, grad_clip: float,
                 device: torch.device, precision: str, run_id: str):
        self.model, self.optimizer, self.scheduler, self.params = model, optimizer, scheduler, params
        self.grad_accum, self.grad_clip, self.run_id = grad_accum, grad_clip, run_id
        self.device, self.precision = device, precision
        self.scaler = precisions.grad_scaler(device, precision)
        self.skipped = 0  # fp16 steps the scaler skipped (overflowing gradients)
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []
        self.utterances = 0  # trained on since the last read

    def run(self, step: int, inputs: Iterator[tuple[int, dict]]) -> None:
        """One optimizer step over `grad_accum` batches of `inputs` ((utterances, model inputs) pairs)."""
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = None
        for _ in range(self.grad_accum):
            n, batch = next(inputs)
            with precisions.autocast(self.device, self.precision):
                # no KV cache: a teacher-forced pass never reads one, and building it costs ~4% of a
                # small decoder's step (same loss and gradients, bit for bit)
                loss = self.model(**batch, use_cache=False).loss / self.grad_accum
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
            self.utterances += n
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        lr = self.scheduler.get_last_lr()[0]
        if self.scaler is None:
            self.optimizer.step()
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.skipped += self.scaler.get_scale() < scale  # the scale drops exactly when a step was skipped
        self.scheduler.step()
        self._pending.append((step, step_loss, grad_norm, lr))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def read(self) -> list[StepRecord]:
        """The steps queued since the last read, in one device-to-host transfer; raises
        OrchestratorError at the first non-finite loss (or gradient, outside fp16)."""
        if not self._pending:
            return []
        values = torch.stack([torch.stack((loss.float(), norm.float())) for _, loss, norm, _ in self._pending])
        records = [StepRecord(step, loss, norm, lr)
                   for (step, _, _, lr), (loss, norm) in zip(self._pending, values.tolist())]
        self._pending.clear()
        for r in records:
            if not math.isfinite(r.loss):
                raise OrchestratorError(f"non-finite loss at step {r.step}", where=f"run {self.run_id}",
                                        fix="lower optim.lr or check the training audio")
            if not math.isfinite(r.grad_norm) and self.scaler is None:
                # a finite loss with inf/NaN gradients poisons the weights
                raise OrchestratorError(f"non-finite gradients at step {r.step} (loss {r.loss:.4g})",
                                        where=f"run {self.run_id}",
                                        fix="lower optim.lr or check the training audio")
        return records
