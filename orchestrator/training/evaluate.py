"""Batched decoding of a manifest, corpus WER (jiwer) + per-utterance errors.

Text is compared after orchestrator.textnorm.normalize, applied to references and hypotheses alike.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer
import torch
from tqdm.auto import tqdm

from orchestrator.data.batching import AudioBank, model_inputs
from orchestrator.data.manifest import Utterance
from orchestrator.data.textnorm import normalize


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


@dataclass(frozen=True)
class Decoded:
    texts: list[str]  # raw decoded text, in the order of the utterances given
    loss: float  # token-weighted teacher-forced loss (nan when not asked for)


@torch.no_grad()
def decode(model, processor, bank: AudioBank, utts: Sequence[Utterance], *, batch_size: int,
           tokens_per_second: float, device: torch.device, with_loss: bool = True, desc: str = "decode",
           progress: bool = True) -> Decoded:
    """Longest-first batches, so each batch pads little and gets a token budget bound to its own
    longest utterance; one generate per batch. With the loss, the batch is encoded once: the loss
    pass decodes from a copy of the encoder states and generate from the originals (bit-identical
    to two encoder passes: tests/test_inference.py)."""
    model.eval()
    bank.prepare(u.audio_filepath for u in utts)  # the manifest's audio, from the disk cache when there is one
    order = sorted(range(len(utts)), key=lambda i: -utts[i].duration)
    texts: dict[int, str] = {}
    loss_sum, token_count = 0.0, 0
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for idx in tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress):
        batch = [utts[i] for i in idx]
        inputs = model_inputs(processor, bank, batch, device, with_labels=with_loss)
        if with_loss:  # one encoder pass feeds both the loss and generate
            labels = inputs.pop("labels")
            encoded = model.get_encoder()(**inputs)
            n_tokens = int((labels != -100).sum())
            loss_sum += float(model(encoder_outputs=_fresh(encoded), labels=labels).loss) * n_tokens
            token_count += n_tokens
            inputs = {"encoder_outputs": encoded}  # the last use: generate may change it in place
        generated = model.generate(**inputs, max_new_tokens=token_budget(batch, tokens_per_second))
        texts.update(zip(idx, processor.batch_decode(generated, skip_special_tokens=True)))
    loss = loss_sum / token_count if token_count else math.nan
    return Decoded([texts[i] for i in range(len(utts))], loss)


def _fresh(encoded):
    """A copy of encoder outputs for one decoder pass: Moonshine v2's decoder adds its position
    embeddings to the encoder states in place, so a second pass must not see the first's."""
    return type(encoded)(last_hidden_state=encoded.last_hidden_state.clone(),
                         attention_mask=getattr(encoded, "attention_mask", None))


def evaluate(model, processor, bank: AudioBank, utts: Sequence[Utterance], *, batch_size: int,
             tokens_per_second: float, device: torch.device, desc: str = "eval",
             progress: bool = True, with_loss: bool = True) -> EvalResult:
    """Decode and score `utts`: corpus WER, per-utterance errors and (`with_loss`) the
    teacher-forced loss, a second decoder pass per batch (nan without it)."""
    decoded = decode(model, processor, bank, utts, batch_size=batch_size, tokens_per_second=tokens_per_second,
                     device=device, with_loss=with_loss, desc=desc, progress=progress)
    references = [normalize(u.text) for u in utts]
    hypotheses = [normalize(text) for text in decoded.texts]
    wer, errors, words = word_errors(references, hypotheses)
    results = tuple(UtteranceResult(u.audio_filepath, r, h, e, w)
                    for u, r, h, e, w in zip(utts, references, hypotheses, errors, words))
    return EvalResult(wer=wer, loss=decoded.loss, utterances=results)
