"""Turn utterances into model batches: decoded audio through the one audio path, labels with EOS,
and the training batch stream (duration buckets or sorted batches, general-speech replay).

The stream is a pure function of (utterances, settings, seed): a resumed run slices it at the
number of batches it had consumed (`itertools.islice`) and gets exactly the batches an
uninterrupted run would have seen next.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from orchestrator.data.audio import load_audio
from orchestrator.data.audio_cache import AudioCache
from orchestrator.data.manifest import Utterance
from orchestrator.config.schema import DataConf
from orchestrator.config.spec import replay_share

BUCKET_BATCHES = 4  # a duration bucket holds this many batches' worth of utterances


class AudioBank:
    """Decoded, resampled, RMS-normalised audio, decoded once per file.

    With `cache_dir`, `prepare(paths)` reads the decoded files from the on-disk cache (see
    audio_cache.py), decoding and storing them the first time; without it, or for a path never
    prepared, `load_audio` decodes it in memory. Either way the samples are load_audio's, bit
    for bit, and memoised for the bank's life."""

    def __init__(self, data: DataConf, cache_dir: str | os.PathLike[str] | None = None,
                 digests: Mapping[str, str] | None = None):
        self.data = data
        self.cache = None if cache_dir is None else AudioCache(cache_dir, sample_rate=data.sample_rate,
                                                                rms_target=data.rms_target)
        self.digests = dict(digests or {})  # path -> sha256 of its bytes, when known already (saves a hash)
        self._waves: dict[str, np.ndarray] = {}

    def prepare(self, paths: Iterable[str]) -> None:
        """Make every path's waveform available, through the disk cache when there is one.

        The cache entry is named by the whole list (e.g. a manifest), so the same list always
        finds the same entry; a list whose files are all known already costs nothing."""
        paths = list(dict.fromkeys(paths))
        if all(p in self._waves for p in paths):
            return
        if self.cache is None:
            for p in paths:
                self[p]
        else:
            self._waves.update(self.cache.load(paths, self.digests))

    def __getitem__(self, path: str) -> np.ndarray:
        wave = self._waves.get(path)
        if wave is None:
            wave = self._waves[path] = load_audio(path, sample_rate=self.data.sample_rate,
                                                  rms_target=self.data.rms_target)
        return wave


def label_ids(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Token ids + EOS, padded with -100 (ignored by the loss). The tokenizer adds no EOS itself."""
    rows = [ids + [tokenizer.eos_token_id] for ids in tokenizer(list(texts), add_special_tokens=False).input_ids]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows], dtype=torch.long)


def raw_audio_layout(processor) -> tuple[int, float] | None:
    """(pad_to_multiple_of, padding_value) when `processor` turns waveforms into `input_values`
    by right-padding alone (MoonshineStreamingProcessor over a Wav2Vec2FeatureExtractor that does
    not normalise), else None. Then `pad_waves` builds the same tensors in numpy at a fraction of
    the processor's cost; tests/test_batching.py proves them equal to the processor's output."""
    extractor = getattr(processor, "feature_extractor", None)
    defaults = getattr(type(processor), "audio_kwargs", None)
    if (type(processor).__name__ != "MoonshineStreamingProcessor"
            or type(extractor).__name__ != "Wav2Vec2FeatureExtractor"
            or not isinstance(defaults, dict) or defaults.get("padding") is not True):
        return None
    if (extractor.do_normalize or extractor.feature_size != 1 or extractor.padding_side != "right"
            or not extractor.return_attention_mask):
        return None
    return int(defaults.get("pad_to_multiple_of") or 1), float(extractor.padding_value)


def pad_waves(waves: Sequence[np.ndarray], multiple: int, value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded float32 `input_values` (width: the longest, rounded up to `multiple`) and its
    int32 `attention_mask`, as the feature extractor makes them."""
    width = -(-max(w.size for w in waves) // multiple) * multiple
    shape = (len(waves), width)
    values = np.zeros(shape, np.float32) if value == 0 else np.full(shape, value, np.float32)
    mask = np.zeros(shape, np.int32)
    for row, wave in enumerate(waves):
        values[row, :wave.size] = wave
        mask[row, :wave.size] = 1
    return torch.from_numpy(values), torch.from_numpy(mask)


def model_inputs(processor, bank: AudioBank, utts: Sequence[Utterance], device: torch.device | str,
                 *, with_labels: bool = True) -> dict[str, torch.Tensor]:
    """input_values + attention_mask (+ labels) of a batch: the processor's, or the same tensors
    built directly when the processor only pads (raw_audio_layout)."""
    waves = [bank[u.audio_filepath] for u in utts]
    layout = raw_audio_layout(processor)
    if layout is not None and bank.data.sample_rate == processor.feature_extractor.sampling_rate:
        input_values, attention_mask = pad_waves(waves, *layout)
    else:
        features = processor(audio=waves, sampling_rate=bank.data.sample_rate, return_tensors="pt")
        input_values, attention_mask = features["input_values"], features["attention_mask"]
    inputs = {"input_values": input_values, "attention_mask": attention_mask}
    if with_labels:
        inputs["labels"] = label_ids(processor.tokenizer, [u.text for u in utts])
    return {k: to_device(v, device) for k, v in inputs.items()}


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host tensor on `device`: on CUDA through pinned memory with a non-blocking copy (no host
    sync; the copy is ordered on the stream before the kernels that read it), else as it is."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


# --- the training stream -------------------------------------------------------------------------

def duration_buckets(utts: Sequence[Utterance], bucket_size: int) -> list[int]:
    """Bucket number of each utterance: its rank by duration (ties by position) // bucket_size."""
    ranked = sorted(range(len(utts)), key=lambda i: (utts[i].duration, i))
    bucket = [0] * len(utts)
    for rank, i in enumerate(ranked):
        bucket[i] = rank // bucket_size
    return bucket


def train_batches(utts: Sequence[Utterance], batch_size: int, seed: int, *,
                  batching: str = "buckets") -> Iterator[list[Utterance]]:
    """Endless seeded epochs; every utterance once per epoch (the last short batch is kept).

    batching="shuffled": plain shuffled batches. "buckets": each epoch is shuffled, grouped into
    duration buckets of BUCKET_BATCHES batches' worth (random order inside a bucket, so batch
    membership changes every epoch), cut into batches in bucket order, and the batches are
    shuffled, so padding stays small while the order of durations stays random. "sorted"
    (moonshine-voice's): the utterances sorted by duration (ties by position) are cut once into
    fixed batches, the shortest first (the short one is the longest utterances'); every epoch
    shuffles only the order of those batches."""
    if batching not in ("buckets", "sorted", "shuffled"):
        raise ValueError(f"unknown batching {batching!r} (buckets, sorted or shuffled)")
    rng = random.Random(seed)
    order = list(range(len(utts)))
    if batching == "sorted":
        ranked = sorted(order, key=lambda i: (utts[i].duration, i))
        fixed = [ranked[start:start + batch_size] for start in range(0, len(ranked), batch_size)]
        while True:
            rng.shuffle(fixed)
            for batch in fixed:
                yield [utts[i] for i in batch]
    bucket = duration_buckets(utts, batch_size * BUCKET_BATCHES) if batching == "buckets" else None
    while True:
        rng.shuffle(order)
        if bucket is None:
            for start in range(0, len(order), batch_size):
                yield [utts[i] for i in order[start:start + batch_size]]
            continue
        grouped = sorted(order, key=bucket.__getitem__)  # stable: shuffled within a bucket
        batches = [grouped[start:start + batch_size] for start in range(0, len(grouped), batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield [utts[i] for i in batch]


def _shuffled_forever(utts: Sequence[Utterance], rng: random.Random) -> Iterator[Utterance]:
    order = list(range(len(utts)))
    while True:
        rng.shuffle(order)
        for i in order:
            yield utts[i]


def training_stream(train: Sequence[Utterance], batch_size: int, seed: int, *, batching: str = "buckets",
                    replay: Sequence[Utterance] = (), replay_fraction: float = 0.0) -> Iterator[list[Utterance]]:
    """The run's batches: `train_batches` of the training utterances, each batch completed with
    replay_share(batch_size, replay_fraction) utterances drawn from `replay` by its own seeded,
    epoch-shuffled stream (without replay: train_batches itself). A bad share fails here, at once."""
    n_replay = replay_share(batch_size, replay_fraction) if replay else 0
    batches = train_batches(train, batch_size - n_replay, seed, batching=batching)
    if not n_replay:
        return batches
    return _with_replay(batches, _shuffled_forever(replay, random.Random(f"replay:{seed}")), n_replay)


def _with_replay(batches: Iterator[list[Utterance]], extra: Iterator[Utterance], n: int) -> Iterator[list[Utterance]]:
    for batch in batches:
        yield batch + [next(extra) for _ in range(n)]
