"""What a run cost, recorded beside its metrics: device, precision, peak memory, training
throughput and evaluation speed (the run matrix and the run's section of EXPERIMENTS.md show them).

- Peak memory: on CUDA `torch.cuda.max_memory_allocated` (the tensors' high-water mark, reset when
  the run starts); on the CPU the process's peak resident set (getrusage ru_maxrss), which holds
  everything the process ever had mapped, model and decoded audio included.
- Training throughput: utterances per second of training-step wall time (evaluation, checkpoints
  and the encoder cache's build are outside it), measured between host syncs so it is real time
  on a GPU, not kernel-launch time.
- Evaluation speed: seconds of audio evaluated per second of wall time ("x real time": 1,000 means
  an hour of speech in 3.6 s), over every evaluation of the run.
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass

import torch


def describe(device: torch.device) -> str:
    """The device in words, e.g. "cuda (NVIDIA H100 80GB HBM3)" or "cpu (2 threads)"."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """MB (2**20 bytes): CUDA's peak allocated memory, else this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Telemetry:
    """Running totals of one run (this process's part of it: a resumed run measures what it ran)."""

    device: torch.device
    train_utts: int = 0
    train_s: float = 0.0
    eval_audio_s: float = 0.0
    eval_s: float = 0.0

    def add_train(self, utterances: int, seconds: float) -> None:
        self.train_utts += utterances
        self.train_s += seconds

    def add_eval(self, audio_seconds: float, seconds: float) -> None:
        self.eval_audio_s += audio_seconds
        self.eval_s += seconds

    def clock(self) -> float:
        """Now, after the device finished what was queued (so a span is the device's time too)."""
        synchronize(self.device)
        return time.perf_counter()

    def values(self) -> dict[str, float | None]:
        """The registry's telemetry columns (None where nothing was measured yet)."""
        return {"peak_memory_mb": peak_memory_mb(self.device),
                "train_utts_per_s": self.train_utts / self.train_s if self.train_s > 0 else None,
                "eval_realtime_x": self.eval_audio_s / self.eval_s if self.eval_s > 0 else None}
