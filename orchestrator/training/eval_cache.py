"""Encoder states of evaluation batches, computed once per run and decoded from at every interval.

Evaluation is most of a campaign's compute: the domain, heldout and dev sets at every interval.
When no adapter touches the frontend or encoder (and nothing there trains), the encoder's output
for an evaluation batch cannot change between intervals, so the runner keeps it: the first
interval encodes each batch and stores its `encoder_outputs`; every later one decodes from a copy
(Moonshine v2's decoder adds its position embeddings to the encoder states in place, so the
stored tensors are only ever copied from).

Exact, not approximate: evaluation batches are fixed (evaluate.eval_batches: the same utterances
in the same order, padded the same way, at every interval), and the cached states are the very
tensors the uncached path would compute (same model, inputs, precision), so the hypotheses and
losses are identical (tests/test_eval_cache.py). A batch is keyed by its utterances' paths in
order; a run's sets share one cache up to `max_mb` (past it, batches are encoded every time).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from orchestrator.data.manifest import Utterance

log = logging.getLogger(__name__)


def encoder_frozen(model: nn.Module) -> str | None:
    """Why the encoder's outputs may change during a run (None: they cannot): an adapter on it or a
    trainable parameter in it (the frontend is part of the encoder)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    encoder = base.get_encoder()
    for name, module in encoder.named_modules():
        if isinstance(module, BaseTunerLayer):
            return f"an adapter wraps encoder.{name}"
    for name, param in encoder.named_parameters():
        if param.requires_grad:
            return f"encoder.{name} is trainable"
    return None


class EvalEncoderCache:
    """`encoder_outputs` of evaluation batches, on the device they were computed on."""

    def __init__(self, max_mb: float):
        self.max_bytes = max_mb * 2 ** 20
        self.bytes = 0
        self.hits = self.misses = 0
        self._kept: dict[tuple[str, ...], object] = {}

    @staticmethod
    def key(batch: Sequence[Utterance]) -> tuple[str, ...]:
        return tuple(u.audio_filepath for u in batch)

    def get(self, batch: Sequence[Utterance]):
        """The stored outputs of `batch` (copy them before a decoder reads them), or None."""
        found = self._kept.get(self.key(batch))
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, batch: Sequence[Utterance], encoded) -> None:
        """Keep `encoded` (a fresh encoder output no decoder has read yet), unless over the budget."""
        size = sum(t.numel() * t.element_size() for t in (encoded.last_hidden_state,
                                                          getattr(encoded, "attention_mask", None))
                   if isinstance(t, torch.Tensor))
        if self.bytes + size > self.max_bytes:
            return
        self._kept[self.key(batch)] = encoded
        self.bytes += size


def for_run(model: nn.Module, setting: str, max_mb: float) -> EvalEncoderCache | None:
    """The run's evaluation cache (`eval.cache_encoder`: auto | off), or None, logged either way."""
    if setting == "off":
        return None
    reason = encoder_frozen(model)
    if reason is not None:
        log.info("evaluation encoder cache: off (%s); every interval encodes its evaluation sets", reason)
        return None
    log.info("evaluation encoder cache: on (the encoder is frozen): each evaluation batch is encoded once "
             "(up to %.0f MB) and decoded from at every interval", max_mb)
    return EvalEncoderCache(max_mb)
