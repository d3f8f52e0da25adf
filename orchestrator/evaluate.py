"""Batched decoding of a manifest, one text normaliser, corpus WER (jiwer) + per-utterance errors.

Normalisation, applied to references and hypotheses alike: lower-case, punctuation removed
(apostrophes included: "don't" -> "dont"), runs of whitespace collapsed, ends stripped.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer
import torch
from tqdm.auto import tqdm

from orchestrator.batching import AudioBank, model_inputs
from orchestrator.manifest import Utterance

normalize = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                           jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


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
    """Corpus WER and, per utterance, its error count and reference word count (jiwer alignments)."""
    out = jiwer.process_words(references, hypotheses)
    errors = []
    for chunks in out.alignments:
        errors.append(sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                          for c in chunks if c.type != "equal"))
    return out.wer, errors, [len(r.split()) for r in references]


@torch.no_grad()
def evaluate(model, processor, bank: AudioBank, utts: Sequence[Utterance], *, batch_size: int,
             tokens_per_second: float, device: torch.device, desc: str = "eval",
             progress: bool = True) -> EvalResult:
    """Decode `utts` longest-first in batches; token budget = ceil(seconds * tokens_per_second) + 4."""
    model.eval()
    order = sorted(range(len(utts)), key=lambda i: -utts[i].duration)
    hyps: dict[int, str] = {}
    loss_sum, token_count = 0.0, 0
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for idx in tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress):
        batch = [utts[i] for i in idx]
        inputs = model_inputs(processor, bank, batch, device)
        labels = inputs.pop("labels")
        n_tokens = int((labels != -100).sum())
        loss_sum += float(model(**inputs, labels=labels).loss) * n_tokens
        token_count += n_tokens
        budget = math.ceil(max(u.duration for u in batch) * tokens_per_second) + 4
        generated = model.generate(**inputs, max_new_tokens=budget)  # fresh encoder pass: never reuse outputs
        for i, text in zip(idx, processor.batch_decode(generated, skip_special_tokens=True)):
            hyps[i] = text
    references = [normalize(u.text) for u in utts]
    hypotheses = [normalize(hyps[i]) for i in range(len(utts))]
    wer, errors, words = word_errors(references, hypotheses)
    results = tuple(UtteranceResult(u.audio_filepath, r, h, e, w)
                    for u, r, h, e, w in zip(utts, references, hypotheses, errors, words))
    return EvalResult(wer=wer, loss=loss_sum / max(token_count, 1), utterances=results)
