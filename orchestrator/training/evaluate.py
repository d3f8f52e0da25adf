"""Batched decoding of a manifest, corpus WER (jiwer) + per-utterance errors.

Text is compared after orchestrator.textnorm.normalize, applied to references and hypotheses alike.
Batches are longest first: `batch_size` utterances each, or (`batch_seconds`, what a GPU gets by
default: CUDA_BATCH_SECONDS) as many as fit that many seconds of padded audio, so short utterances
share big batches and long ones small ones. Forward passes and generation run in the run's
precision (training/precision.py).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import jiwer
import torch
from torch import nn
from tqdm.auto import tqdm

from orchestrator.config.schema import EvalConf
from orchestrator.data.batching import AudioBank, label_ids, model_inputs, to_device
from orchestrator.data.manifest import Utterance
from orchestrator.data.textnorm import normalize
from orchestrator.training import precision as precisions

# Padded audio seconds per evaluation batch on a GPU when eval.batch_seconds is not set: 256
# utterances of 8 s (the batch Moonshine's own Open ASR numbers use) in about 1 GB of activations
# and KV cache for streaming-tiny in bf16.
CUDA_BATCH_SECONDS = 2048.0


@dataclass(frozen=True)
class UtteranceResult:
    audio_filepath: str
    reference: str  # normalised
    hypothesis: str  # normalised
    errors: int  # substitutions + deletions + insertions
    ref_words: int


@dataclass(frozen=True)
class EvalResult:
    wer: float
    loss: float
    utterances: tuple[UtteranceResult, ...]
    seconds: float = 0.0  # wall time of the decoding (device work included)
    audio_seconds: float = 0.0  # the speech it decoded

    @property
    def n(self) -> int:
        return len(self.utterances)


def word_errors(references: list[str], hypotheses: list[str]) -> tuple[float, list[int], list[int]]:
    """Corpus WER and, per utterance, its error count and reference word count, both from jiwer's
    own alignment and tokens, so sum(errors) / sum(words) is jiwer's WER exactly."""
    out = jiwer.process_words(references, hypotheses)
    errors = []
    for chunks in out.alignments:
        errors.append(sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                          for c in chunks if c.type != "equal"))
    return out.wer, errors, [len(tokens) for tokens in out.references]


def token_budget(batch: Sequence[Utterance], tokens_per_second: float) -> int:
    """Max new tokens for a batch: ceil(longest seconds * tokens_per_second) + 4."""
    return math.ceil(max(u.duration for u in batch) * tokens_per_second) + 4


def batch_seconds_for(eval_conf: EvalConf, device: torch.device) -> float | None:
    """The padded-seconds budget of an evaluation batch on `device` (None: eval.batch_size utterances)."""
    if eval_conf.batch_seconds is not None:
        return float(eval_conf.batch_seconds)
    return CUDA_BATCH_SECONDS if device.type == "cuda" else None


def eval_batches(utts: Sequence[Utterance], *, batch_size: int, batch_seconds: float | None = None) -> list[list[int]]:
    """Indices of `utts` in longest-first batches: `batch_size` each, or with `batch_seconds`, as
    many as keep (utterances x the batch's longest duration) within it (at least one each)."""
    order = sorted(range(len(utts)), key=lambda i: -utts[i].duration)
    if batch_seconds is None:
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * utts[batches[-1][0]].duration <= batch_seconds:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@dataclass(frozen=True)
class Decoded:
    texts: list[str]  # raw decoded text, in the order of the utterances given
    loss: float  # token-weighted teacher-forced loss (nan when not asked for)


@contextmanager
def merged_lora(model: nn.Module) -> Iterator[int]:
    """For the duration, every LoRA or DoRA Linear computes one matmul with its merged weight
    (LoRA: W + scale * B @ A; DoRA: m / ||W + scale * B @ A|| * (W + scale * B @ A), PEFT's own
    merge_safe) instead of the adapter's extra paths: what `export --merge` writes, and about a
    quarter of a small model's decoding time less (fewer kernels per token; DoRA's forward also
    re-computes the weight norm at every call). The base layer's weight Parameter is swapped for the
    merged tensor and put back as the very same object afterwards, so nothing drifts (PEFT's own
    unmerge subtracts the delta again, which rounds). Embedding and convolution layers, and anything
    not an active single adapter, stay as they are. Yields how many layers were merged. With lora_B
    zero (step 0) a LoRA's merged weight is W exactly."""
    if not any(hasattr(m, "lora_A") for m in model.modules()):  # a plain model (a merged export): no PEFT
        yield 0
        return
    from peft.tuners.lora.layer import Linear as LoraLinear

    swapped = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if type(module) is not LoraLinear or module.merged or module.disable_adapters:
                    continue
                active = [name for name in module.active_adapters if name in module.lora_A]
                base = module.get_base_layer()
                if len(active) != 1 or not isinstance(base, nn.Linear):
                    continue
                name, original = active[0], base.weight
                if module.use_dora.get(name):  # a new tensor (merge_safe writes into none); its norm cache is dropped
                    weight = module.lora_variant[name].merge_safe(module, name, original.detach())
                    module._cache_pop(f"{name}-weight_norm")
                else:
                    weight = original + module.get_delta_weight(name).to(original.dtype)
                base.weight = nn.Parameter(weight, requires_grad=False)
                module.merged_adapters.append(name)
                swapped.append((module, base, original, name))
        yield len(swapped)
    finally:
        for module, base, original, name in reversed(swapped):
            base.weight = original
            module.merged_adapters.remove(name)


@torch.no_grad()
def decode(model, processor, bank: AudioBank, utts: Sequence[Utterance], *, batch_size: int,
           tokens_per_second: float, device: torch.device, with_loss: bool = True, desc: str = "decode",
           progress: bool = True, batch_seconds: float | None = None, precision: str = "fp32",
           encoder_cache=None) -> Decoded:
    """Longest-first batches (eval_batches), so each batch pads little and gets a token budget bound
    to its own longest utterance; one generate per batch. With the loss, the batch is encoded once:
    the loss pass decodes from a copy of the encoder states and generate from the originals
    (bit-identical to two encoder passes: tests/test_inference.py). `encoder_cache`
    (eval_cache.EvalEncoderCache, for a frozen encoder): batches it holds are not encoded again."""
    model.eval()
    # summed on the device (float64, as Python floats would), read once at the end: no sync per batch
    loss_sum = token_count = torch.zeros((), dtype=torch.float64, device=device)
    batches = eval_batches(utts, batch_size=batch_size, batch_seconds=batch_seconds)
    prepared = False  # the manifest's audio, from the disk cache when there is one: a cached batch needs none
    texts: dict[int, str] = {}
    with merged_lora(model):  # one matmul per adapted layer; the weights are put back as they were
        for idx in tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress):
            batch = [utts[i] for i in idx]
            encoded = None if encoder_cache is None else encoder_cache.get(batch)
            with precisions.autocast(device, precision):
                if encoded is None:
                    if not prepared:  # the whole list: the disk cache names its entry by it
                        bank.prepare(u.audio_filepath for u in utts)
                        prepared = True
                    inputs = model_inputs(processor, bank, batch, device, with_labels=with_loss)
                    labels = inputs.pop("labels", None)
                    if with_loss or encoder_cache is not None:  # one encoder pass feeds the loss and generate
                        encoded = model.get_encoder()(**inputs)
                        if encoder_cache is not None:
                            encoder_cache.put(batch, encoded)
                elif with_loss:
                    labels = to_device(label_ids(processor.tokenizer, [u.text for u in batch]), device)
                if with_loss:
                    n_tokens = (labels != -100).sum().double()
                    loss_sum = loss_sum + model(encoder_outputs=_fresh(encoded), labels=labels).loss.double() * n_tokens
                    token_count = token_count + n_tokens
                if encoded is not None:  # generate may change the states in place: a kept one gets a copy
                    inputs = {"encoder_outputs": encoded if encoder_cache is None else _fresh(encoded)}
                generated = model.generate(**inputs, max_new_tokens=token_budget(batch, tokens_per_second))
            texts.update(zip(idx, processor.batch_decode(generated, skip_special_tokens=True)))
    tokens = float(token_count)
    loss = float(loss_sum) / tokens if tokens else math.nan
    return Decoded([texts[i] for i in range(len(utts))], loss)


def _fresh(encoded):
    """A copy of encoder outputs for one decoder pass: Moonshine v2's decoder adds its position
    embeddings to the encoder states in place, so a second pass must not see the first's."""
    return type(encoded)(last_hidden_state=encoded.last_hidden_state.clone(),
                         attention_mask=getattr(encoded, "attention_mask", None))


def evaluate(model, processor, bank: AudioBank, utts: Sequence[Utterance], *, batch_size: int,
             tokens_per_second: float, device: torch.device, desc: str = "eval",
             progress: bool = True, with_loss: bool = True, batch_seconds: float | None = None,
             precision: str = "fp32", encoder_cache=None) -> EvalResult:
    """Decode and score `utts`: corpus WER, per-utterance errors and (`with_loss`) the
    teacher-forced loss, a second decoder pass per batch (nan without it); timed."""
    from orchestrator.training.telemetry import synchronize

    synchronize(device)
    started = time.perf_counter()
    decoded = decode(model, processor, bank, utts, batch_size=batch_size, tokens_per_second=tokens_per_second,
                     device=device, with_loss=with_loss, desc=desc, progress=progress,
                     batch_seconds=batch_seconds, precision=precision, encoder_cache=encoder_cache)
    synchronize(device)
    seconds = time.perf_counter() - started
    references = [normalize(u.text) for u in utts]
    hypotheses = [normalize(text) for text in decoded.texts]
    wer, errors, words = word_errors(references, hypotheses)
    results = tuple(UtteranceResult(u.audio_filepath, r, h, e, w)
                    for u, r, h, e, w in zip(utts, references, hypotheses, errors, words))
    return EvalResult(wer=wer, loss=decoded.loss, utterances=results, seconds=seconds,
                      audio_seconds=sum(u.duration for u in utts))
