"""How a run computes: `precision=fp32|bf16|fp16`, for training, every evaluation, `eval` and `transcribe`.

- fp32: plain float32. On CUDA devices of compute capability 8.0+ (Ampere, Hopper) matmuls and
  convolutions use TF32 tensor cores (`torch.backends.*.allow_tf32`), as transformers' Trainer
  does with `tf32=True`: float32 range and storage, a 10-bit mantissa inside the matmul.
- bf16: `torch.autocast(dtype=bfloat16)` around forward passes and generation; weights, gradients
  and optimizer state stay float32 (mixed precision). Works on the CPU too (slower or faster
  depending on the CPU's bf16 support: bench/train_step.py reports it, nothing requires it).
- fp16: `torch.autocast(dtype=float16)` with a `torch.amp.GradScaler`, which scales the loss
  before backward and skips an optimizer step whose gradients overflowed (counted, not fatal).

The weights are never cast: adapters save and load in float32 whatever the run's precision.
"""
from __future__ import annotations

import contextlib
import logging

import torch

from orchestrator.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check(device: torch.device, precision: str) -> None:
    """Refuse a precision the device cannot run, before the registry gets a row."""
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 support",
                          where="precision", fix="use precision=fp16 (with a gradient scaler) or precision=fp32")


def setup(device: torch.device, precision: str) -> bool:
    """Process-wide settings for `device`: TF32 matmuls on Ampere+ GPUs. Returns whether TF32 is on."""
    check(device, precision)
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


def autocast(device: torch.device, precision: str):
    """The context forward passes run in: autocast to bf16/fp16, or nothing for fp32."""
    dtype = DTYPES.get(str(precision))
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (None otherwise: bf16 has float32's range and needs none)."""
    if str(precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
