"""Encoder states computed once per training utterance, when nothing on the encoder side trains.

With every frontend + encoder module frozen and deterministic, the encoder's output for an
utterance never changes during a run, so the training step can skip it: `step_inputs` encodes the
training utterances once (batched, without autograd) and each step hands the decoder those states
through `encoder_outputs`, exactly as MoonshineStreamingModel.forward would have passed its own
encoder's. Evaluation is untouched (it generates with the full model).

What "exactly" takes, on Moonshine v2 (transformers 5.x, MoonshineStreamingEncoder):
- The valid frames of an utterance depend on how far its batch pads it. The causal convolutions
  of the frontend mark an output frame valid when *any* input in its window is valid, so padding
  beyond an utterance adds up to a few "tail" frames (the convolution running into the zeros), and
  the encoder's sliding-window attention lets the last real frames see them. The number of valid
  frames, `valid_frames(samples, width)`, grows with the padded width and saturates a few frames
  past the audio; the states depend on (utterance, valid frames) only. So the cache keeps each
  utterance's *saturated* states (built with enough padding; what every utterance but the longest
  few of a batch gets), and a batch that pads an utterance less (its longest ones) gets those
  classes encoded on first use, at the batch's own width, and memoised.
- The cross-attention mask is the encoder's own: a bool [batch, frames] prefix mask, padded to the
  encoder length the ordinary batch would have (`encoder_length(width)`), so the decoder sees
  tensors of the same shapes; the masked positions hold zeros instead of the tail's values, which
  the mask gives zero weight either way.
- The decoder adds its position embeddings to the encoder states in place: every step gets a
  fresh tensor, the cache is only ever copied from.
- States computed in another batch shape differ from the ordinary step's in float rounding only
  (~1e-7); tests/test_encoder_cache.py states the tolerances.
Conditions (else the ordinary step, logged once): Moonshine v2 with a padding-only processor, no
trainable parameter and no PEFT layer on the encoder side, no dropout with p > 0 and no batch norm
there, and the cache under optim.cache_encoder_max_mb.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from orchestrator.artifacts.atomic import atomic_write
from orchestrator.config.schema import OptimConf
from orchestrator.data.batching import AudioBank, label_ids, model_inputs, raw_audio_layout, to_device
from orchestrator.data.manifest import Utterance

log = logging.getLogger(__name__)

MODEL_CLASS = "MoonshineStreamingForConditionalGeneration"
BUILD_BATCH = 16  # utterances per encoder call while building (sorted by length: little padding)
SHARED_DIR = ".encoder_cache"  # under the output folder: states shared by the runs of one base model
SHARED_SOURCES = ("training/encoder_cache.py", "data/batching.py", "data/audio.py")
DROPOUT_ATTRS = ("attention_dropout", "dropout", "hidden_dropout", "activation_dropout")
StepInputs = Callable[[Sequence[Utterance]], dict]


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def ineligible(model: nn.Module, processor, bank: AudioBank) -> str | None:
    """Why the encoder states cannot be cached for this model (None: they can)."""
    base = _base(model)
    if type(base).__name__ != MODEL_CLASS:
        return f"{type(base).__name__} is not a Moonshine v2 model"
    layout = raw_audio_layout(processor)
    if layout is None or bank.data.sample_rate != processor.feature_extractor.sampling_rate:
        return "the processor does more than pad the waveforms"
    encoder = base.model.encoder
    embedder = encoder.embedder
    if layout[0] % embedder.frame_len or layout[1] != 0:
        return f"the processor pads to multiples of {layout[0]} with {layout[1]}, not of the frame length with 0"
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in encoder.named_modules():
        where = f"model.encoder.{name}".rstrip(".")
        if isinstance(module, BaseTunerLayer):
            return f"an adapter wraps {where}"
        if isinstance(module, nn.Dropout) and module.p > 0:
            return f"{where} is dropout p={module.p}"
        for attr in DROPOUT_ATTRS:  # functional dropout, e.g. the attention's, set from the config
            p = getattr(module, attr, None)
            if isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0:
                return f"{where} has {attr} {p}"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return f"{where} is a batch norm (its statistics change in training)"
    for name, param in encoder.named_parameters():
        if param.requires_grad:
            return f"model.encoder.{name} is trainable"
    for conv in (embedder.conv1, embedder.conv2):
        if conv.dilation[0] != 1 or conv.left_pad != conv.kernel_size[0] - 1:
            return "the frontend's convolutions are not the causal, undilated ones this cache models"
    return None


# --- frame arithmetic: Moonshine v2's padding masks, in integers --------------------------------

def _convs(model: nn.Module) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    embedder = _base(model).model.encoder.embedder
    return embedder.frame_len, tuple((c.kernel_size[0], c.stride[0], c.left_pad) for c in (embedder.conv1, embedder.conv2))


def encoder_length(width: int, frame_len: int, convs) -> int:
    """Frames the encoder returns for input_values `width` samples wide."""
    length = width // frame_len
    for kernel, stride, left_pad in convs:
        length = (length + left_pad - kernel) // stride + 1
    return length


def valid_frames(samples: int, width: int, frame_len: int, convs) -> int:
    """Valid encoder frames of an utterance of `samples` padded to `width` (the embedder's mask:
    whole frames only, then each causal conv keeps a frame whose window touches a valid one)."""
    valid, length = samples // frame_len, width // frame_len
    for kernel, stride, left_pad in convs:
        length = (length + left_pad - kernel) // stride + 1
        valid = 0 if valid == 0 else min(length, (valid - 1 + left_pad) // stride + 1)
    return valid


def saturated_width(samples: int, multiple: int, frame_len: int, convs) -> int:
    """The narrowest padded width (a multiple of `multiple`) giving the utterance all its frames."""
    width = -(-samples // multiple) * multiple
    most = valid_frames(samples, width + 64 * frame_len, frame_len, convs)  # far past saturation
    while valid_frames(samples, width, frame_len, convs) < most:
        width += multiple
    return width


# --- the cache ----------------------------------------------------------------------------------

class EncoderCache:
    """Saturated encoder states of every utterance in one flat [frames, d] tensor (+ offsets), and
    the few less-padded classes that batches ask for, memoised."""

    def __init__(self, model: nn.Module, processor, bank: AudioBank, device: torch.device, max_bytes: float):
        self.model, self.processor, self.bank, self.device = model, processor, bank, device
        self.encoder = _base(model).model.encoder
        self.multiple = raw_audio_layout(processor)[0]
        self.frame_len, self.convs = _convs(model)
        self.max_bytes = max_bytes
        self.samples: dict[str, int] = {}
        self.offset: dict[str, tuple[int, int]] = {}  # path -> (start, frames) in self.flat
        self.flat = torch.empty(0)
        self.extra: dict[tuple[str, int], torch.Tensor] = {}  # (path, valid frames) -> states
        self.extra_bytes = 0

    def plan(self, paths: Sequence[str]) -> int:
        """Byte size of the saturated states of `paths` (known before encoding anything)."""
        d = self.encoder.config.hidden_size
        for p in paths:
            self.samples[p] = self.bank[p].size
        frames = sum(self._saturated(p) for p in paths)
        return frames * d * torch.finfo(self._dtype()).bits // 8

    def _dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def _saturated(self, path: str) -> int:
        s = self.samples[path]
        return valid_frames(s, saturated_width(s, self.multiple, self.frame_len, self.convs), self.frame_len, self.convs)

    def _encode(self, paths: Sequence[str], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder on `paths` right-padded to `width` samples, as the training step runs it
        (same mode, no autograd); its states and valid-frame counts."""
        values = np.zeros((len(paths), width), np.float32)  # as batching.pad_waves, only wider
        mask = np.zeros((len(paths), width), np.int32)
        for row, p in enumerate(paths):
            wave = self.bank[p]
            values[row, :wave.size] = wave
            mask[row, :wave.size] = 1
        with torch.no_grad():
            out = self.encoder(torch.from_numpy(values).to(self.device),
                               attention_mask=torch.from_numpy(mask).to(self.device))
        counts = out.attention_mask.sum(-1).tolist()
        expected = [valid_frames(self.samples[p], width, self.frame_len, self.convs) for p in paths]
        if counts != expected:  # the frame arithmetic no longer describes this model: never guess
            raise RuntimeError(f"encoder cache: the encoder gave {counts} valid frames, expected {expected}")
        return out.last_hidden_state, counts

    def build(self, paths: Sequence[str]) -> None:
        paths = sorted(dict.fromkeys(paths), key=lambda p: (self.samples[p], p))
        total = sum(self._saturated(p) for p in paths)
        self.flat = torch.empty(total, self.encoder.config.hidden_size, dtype=self._dtype(), device=self.device)
        start = 0
        for i in range(0, len(paths), BUILD_BATCH):
            chunk = paths[i:i + BUILD_BATCH]
            width = max(saturated_width(self.samples[p], self.multiple, self.frame_len, self.convs) for p in chunk)
            states, counts = self._encode(chunk, width)
            for row, (p, n) in enumerate(zip(chunk, counts)):
                self.flat[start:start + n] = states[row, :n]
                self.offset[p] = (start, n)
                start += n

    def inputs(self, utts: Sequence[Utterance]) -> dict:
        """What the training step passes the model for this batch: the cached encoder states,
        padded as the ordinary batch would be, and the labels (fresh tensors every call)."""
        from transformers.models.moonshine_streaming.modeling_moonshine_streaming import (
            MoonshineStreamingEncoderModelOutput)

        paths = [u.audio_filepath for u in utts]
        width = -(-max(self.samples[p] for p in paths) // self.multiple) * self.multiple
        counts = [valid_frames(self.samples[p], width, self.frame_len, self.convs) for p in paths]
        partial = self._partial(paths, counts, width)
        states = torch.zeros(len(paths), encoder_length(width, self.frame_len, self.convs), self.flat.shape[-1],
                             dtype=self.flat.dtype, device=self.device)
        mask = torch.zeros(states.shape[:2], dtype=torch.bool, device=self.device)
        for row, (p, n) in enumerate(zip(paths, counts)):
            start, saturated = self.offset[p]
            states[row, :n] = self.flat[start:start + n] if n == saturated else partial[(p, n)]
            mask[row, :n] = True
        labels = to_device(label_ids(self.processor.tokenizer, [u.text for u in utts]), self.device)
        return {"encoder_outputs": MoonshineStreamingEncoderModelOutput(last_hidden_state=states, attention_mask=mask),
                "labels": labels}

    def _partial(self, paths: list[str], counts: list[int], width: int) -> dict[tuple[str, int], torch.Tensor]:
        """States of the batch's utterances padded less than saturation (its longest): memoised, or
        encoded at this batch's width (kept while the cache stays under its cap)."""
        wanted = {(p, n) for p, n in zip(paths, counts) if n != self.offset[p][1]}
        missing = sorted(wanted - self.extra.keys())
        found = {key: self.extra[key] for key in wanted & self.extra.keys()}
        if missing:
            states, _ = self._encode([p for p, _ in missing], width)
            for row, key in enumerate(missing):
                found[key] = kept = states[row, :key[1]].clone()
                if self.flat.numel() * self.flat.element_size() + self.extra_bytes < self.max_bytes:
                    self.extra[key] = kept
                    self.extra_bytes += kept.numel() * kept.element_size()
        return found


def step_inputs(conf: OptimConf, model: nn.Module, processor, bank: AudioBank, utts: Sequence[Utterance],
                device: torch.device, shared_dir: Path | None = None) -> StepInputs:
    """batch -> model inputs for the training step: cached encoder states when optim.cache_encoder
    is auto and the encoder side cannot change (logged), else the ordinary input_values. With
    `shared_dir`, runs on the same base weights and utterances build the states once between them."""
    plain = functools.partial(_plain, processor, bank, device)
    if conf.cache_encoder == "off":
        return plain
    reason = ineligible(model, processor, bank)
    if reason is not None:
        log.info("encoder cache: off (%s); every training step runs the encoder", reason)
        return plain
    cache = EncoderCache(model, processor, bank, device, conf.cache_encoder_max_mb * 2 ** 20)
    paths = [u.audio_filepath for u in utts]
    size = cache.plan(paths)
    if size > cache.max_bytes:
        log.warning("encoder cache: off: the states of %d utterances need %.0f MB, over optim.cache_encoder_max_mb="
                    "%s; every training step runs the encoder", len(set(paths)), size / 2 ** 20,
                    conf.cache_encoder_max_mb)
        return plain
    was_training = model.training
    model.train()  # the mode of the training step (no dropout or batch norm there: checked)
    started = time.perf_counter()
    try:
        how = _build_or_read(cache, model, bank, paths, shared_dir)
    finally:
        model.train(was_training)
    log.info("encoder cache: %d utterances %s in %.1f s, %d frames x %d = %.1f MB; training steps skip the encoder",
             len(cache.offset), how, time.perf_counter() - started, cache.flat.shape[0], cache.flat.shape[1],
             size / 2 ** 20)
    return cache.inputs


def _build_or_read(cache: EncoderCache, model: nn.Module, bank: AudioBank, paths: Sequence[str],
                   shared_dir: Path | None) -> str:
    """Fill `cache`: read from `shared_dir` when a run on the same base weights, audio and code
    stored these utterances' states, else encoded (and stored there for the next run).

    The states are a function of the frozen encoder's weights, the audio and the build's batches
    (the sorted set of paths, BUILD_BATCH at a time), all in the key, so every run that would build
    them builds the same tensors; one file per set, written atomically under a lock (a second run
    started at the same time waits for the first instead of encoding too)."""
    if shared_dir is None or any(p not in bank.digests for p in paths):  # unknown audio: no key
        cache.build(paths)
        return "encoded once"
    from orchestrator.training import baseline_cache

    h = hashlib.sha256(json.dumps({"base": baseline_cache.base_digest(model), "dtype": str(cache._dtype()),
                                   "device": cache.device.type, "batch": BUILD_BATCH,
                                   "audio": [bank.data.sample_rate, bank.data.rms_target],
                                   "code": baseline_cache.code_digest(SHARED_SOURCES)}).encode())
    for p in sorted(set(paths)):
        h.update(f"{p}\0{bank.digests[p]}\n".encode())
    shared_dir.mkdir(parents=True, exist_ok=True)
    entry = shared_dir / f"{h.hexdigest()[:32]}.pt"
    with baseline_cache.locked(entry.with_suffix(".lock")):
        if entry.exists():
            try:
                state = torch.load(entry, map_location=cache.device, weights_only=True)
                cache.flat, cache.offset = state["flat"], {p: tuple(o) for p, o in state["offset"].items()}
                if set(cache.offset) == set(paths):
                    return f"read from {entry}"
            except (OSError, RuntimeError, KeyError, EOFError):
                log.warning("encoder cache: %s is damaged; encoding again", entry)
        cache.offset = {}
        cache.build(paths)
        atomic_write(entry, lambda fh: torch.save({"flat": cache.flat.cpu(), "offset": cache.offset}, fh))
    return f"encoded once (kept in {shared_dir} for the next run)"


def _plain(processor, bank: AudioBank, device: torch.device, utts: Sequence[Utterance]) -> dict:
    return model_inputs(processor, bank, utts, device)
