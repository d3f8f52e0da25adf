"""Turn utterances into model batches: decoded audio through the one audio path, labels with EOS."""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from orchestrator.audio import load_audio
from orchestrator.manifest import Utterance
from orchestrator.schema import DataConf


class AudioBank:
    """Decoded, resampled, RMS-normalised audio, decoded once per file for the process's life."""

    def __init__(self, data: DataConf):
        self.data = data
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, path: str) -> np.ndarray:
        wave = self._cache.get(path)
        if wave is None:
            wave = self._cache[path] = load_audio(path, sample_rate=self.data.sample_rate,
                                                  rms_target=self.data.rms_target)
        return wave


def label_ids(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Token ids + EOS, padded with -100 (ignored by the loss). The tokenizer adds no EOS itself."""
    rows = [ids + [tokenizer.eos_token_id] for ids in tokenizer(list(texts), add_special_tokens=False).input_ids]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows], dtype=torch.long)


def model_inputs(processor, bank: AudioBank, utts: Sequence[Utterance], device: torch.device,
                 *, with_labels: bool = True) -> dict[str, torch.Tensor]:
    waves = [bank[u.audio_filepath] for u in utts]
    features = processor(audio=waves, sampling_rate=bank.data.sample_rate, return_tensors="pt")
    inputs = {"input_values": features["input_values"], "attention_mask": features["attention_mask"]}
    if with_labels:
        inputs["labels"] = label_ids(processor.tokenizer, [u.text for u in utts])
    return {k: v.to(device) for k, v in inputs.items()}


def train_batches(utts: Sequence[Utterance], batch_size: int, seed: int) -> Iterator[list[Utterance]]:
    """Endless seeded epochs of shuffled batches (the last short batch of an epoch is kept)."""
    rng = random.Random(seed)
    order = list(range(len(utts)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [utts[i] for i in order[start:start + batch_size]]
