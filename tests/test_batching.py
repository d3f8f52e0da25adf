"""The training batch stream: duration buckets, replay share, determinism and exact resume."""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
import torch
from transformers import AutoProcessor

from orchestrator.training import loop as train
from orchestrator.artifacts.run_folder import audio_cache_dir as cache_dir
from orchestrator.data.batching import (AudioBank, label_ids, model_inputs, pad_waves, raw_audio_layout, replay_share, train_batches, training_stream)
from orchestrator.errors import ConfigError
from orchestrator.data.manifest import Utterance, read_manifest
from orchestrator.training.modeling import char_tokenizer, streaming_processor
from orchestrator.registry import Store
from orchestrator.config.schema import DataConf
from orchestrator.config.spec import spec_from_overrides


def _utts(n: int, seed: int = 0, prefix: str = "u") -> list[Utterance]:
    """Mixed durations (0.5-15 s), like a real manifest of short commands and long sentences."""
    rng = random.Random(seed)
    return [Utterance(f"/{prefix}{i}.wav", f"text {i}", round(rng.uniform(0.5, 15.0), 2), i + 1) for i in range(n)]


def _epoch(stream, n_utts: int, batch_size: int) -> list[list[Utterance]]:
    return list(itertools.islice(stream, math.ceil(n_utts / batch_size)))


def _padding(batches) -> float:
    """Padded seconds over real seconds (1.0: no padding)."""
    return (sum(max(u.duration for u in b) * len(b) for b in batches)
            / sum(u.duration for b in batches for u in b))


@pytest.mark.parametrize("batching", ["buckets", "sorted", "shuffled"])
def test_every_utterance_once_per_epoch(batching):
    utts = _utts(103)  # not a multiple of the batch size: one short batch per epoch
    stream = train_batches(utts, 8, seed=1, batching=batching)
    for _ in range(3):
        epoch = _epoch(stream, len(utts), 8)
        assert Counter(u.line for b in epoch for u in b) == Counter(u.line for u in utts)
        assert sorted(len(b) for b in epoch) == [7] + [8] * 12


def test_seeded_and_still_shuffled():
    utts = _utts(200)
    first = list(itertools.islice(train_batches(utts, 8, seed=3), 100))
    assert first == list(itertools.islice(train_batches(utts, 8, seed=3), 100))
    assert first != list(itertools.islice(train_batches(utts, 8, seed=4), 100))
    # batch membership and the order of durations change from one epoch to the next
    e1, e2 = first[:25], first[25:50]
    assert {frozenset(u.line for u in b) for b in e1} != {frozenset(u.line for u in b) for b in e2}
    longest = [max(u.duration for u in b) for b in e1]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_buckets_pad_less_than_a_plain_shuffle():
    utts = _utts(400)
    bucketed = list(itertools.islice(train_batches(utts, 8, seed=0, batching="buckets"), 500))
    plain = list(itertools.islice(train_batches(utts, 8, seed=0, batching="shuffled"), 500))
    assert _padding(bucketed) < 1.15 < 1.5 < _padding(plain)


def test_plain_shuffle_is_the_stream_runs_had_before_buckets():
    """data.batching=shuffled reproduces the original sampler batch for batch."""
    utts = _utts(50)

    def original(seed):
        rng, order = random.Random(seed), list(range(len(utts)))
        while True:
            rng.shuffle(order)
            for start in range(0, len(order), 8):
                yield [utts[i] for i in order[start:start + 8]]

    assert (list(itertools.islice(train_batches(utts, 8, 42, batching="shuffled"), 40))
            == list(itertools.islice(original(42), 40)))


def test_replay_share_of_every_batch():
    train_utts, replay = _utts(60), _utts(23, seed=9, prefix="r")
    stream = training_stream(train_utts, 8, seed=5, replay=replay, replay_fraction=0.25)
    batches = list(itertools.islice(stream, 46))  # 23 replay epochs' worth of replay draws
    for batch in batches:
        assert sum(u.audio_filepath.startswith("/r") for u in batch) == 2 and len(batch) == 8
    drawn = [u.line for b in batches for u in b if u.audio_filepath.startswith("/r")]
    for start in range(0, len(drawn), 23):  # the replay stream's own epochs: each utterance once
        assert sorted(drawn[start:start + 23]) == list(range(1, 24))
    # the training part is exactly the bucketed stream of 6 per batch
    own = list(itertools.islice(train_batches(train_utts, 6, seed=5), 46))
    assert [b[:-2] for b in batches] == own

    assert replay_share(8, 0.5) == 4 and replay_share(16, 0.1) == 2
    for fraction in (0.05, 0.95):  # rounds to none, or to the whole batch
        with pytest.raises(ConfigError, match="data.replay_fraction"):
            training_stream(train_utts, 8, seed=5, replay=replay, replay_fraction=fraction)


@pytest.mark.parametrize("kw", [{}, {"batching": "shuffled"}, {"replay_fraction": 0.5}])
def test_resumed_slice_equals_the_uninterrupted_stream(kw):
    train_utts = _utts(37)
    replay = _utts(11, seed=2, prefix="r") if "replay_fraction" in kw else ()

    def stream():
        return training_stream(train_utts, 4, seed=7, replay=replay, **kw)

    whole = list(itertools.islice(stream(), 60))
    for consumed in (0, 1, 9, 10, 33):  # inside and across epoch boundaries of both streams
        assert list(itertools.islice(stream(), consumed, 60)) == whole[consumed:]


def test_a_run_with_replay_trains_on_cached_audio(run_overrides, speech, tmp_path):
    """A real run mixing the heldout speech into training: replay is counted in the run's data
    stats, and training, evaluation and the parity check (which reloads the adapter as
    `orchestrator eval` does) share one cache entry per manifest under <output_dir>/.audio_cache."""
    small = {}
    for split in ("domain", "heldout"):  # two utterances each: evaluation is not what is tested here
        small[split] = tmp_path / f"{split}.jsonl"
        rows = [line.replace('"wavs/', f'"{speech[split].parent}/wavs/')
                for line in speech[split].read_text().splitlines()[:2]]
        small[split].write_text("\n".join(rows) + "\n")
    overrides = [*run_overrides, "optim.steps=1", "eval.interval=1", f"eval.domain_manifest={small['domain']}",
                 f"eval.heldout_manifest={small['heldout']}", f"data.replay_manifest={speech['heldout']}",
                 "data.replay_fraction=0.5"]
    store = Store(next(o.split("=", 1)[1] for o in overrides if o.startswith("registry.url=")))
    spec = spec_from_overrides(overrides)
    run = store.get_run(train.run(spec, store, progress=False))
    store.close()
    assert run.status == "completed" and run.data_stats["replay"]["utterances"] == 8
    assert [c.passed for c in run.checks] == [True]
    entries = sorted(p.suffix for p in cache_dir(spec.output_dir).iterdir())
    assert entries == [".json"] * 4 + [".npy"] * 4  # train, replay, domain, heldout: nothing else


def test_direct_padding_equals_the_processor(speech, tiny_checkpoint):
    """model_inputs builds input_values + attention_mask itself when the processor only pads:
    the same tensors (values, dtype, shape) as the processor, which stays the reference."""
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)  # the real from_pretrained path
    layout = raw_audio_layout(processor)
    assert layout == (80, 0.0)
    utts = read_manifest(speech["train"])
    bank = AudioBank(DataConf())
    waves = [bank[u.audio_filepath] for u in utts]
    odd = [waves[0][:80], waves[1][:81], waves[2][:79], waves[3][:1]]  # exact, just over and under a multiple
    for batch in (waves[:1], waves[:5], waves[4:16], odd, [*odd, waves[7]]):
        expected = processor(audio=batch, sampling_rate=16000, return_tensors="pt")
        assert set(expected) == {"input_values", "attention_mask"}
        for name, tensor in zip(("input_values", "attention_mask"), pad_waves(batch, *layout)):
            assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name])

    direct = model_inputs(processor, bank, utts[:6], torch.device("cpu"))
    features = processor(audio=waves[:6], sampling_rate=16000, return_tensors="pt")
    assert torch.equal(direct["input_values"], features["input_values"])
    assert torch.equal(direct["labels"], label_ids(processor.tokenizer, [u.text for u in utts[:6]]))

    normalising = streaming_processor(char_tokenizer())
    normalising.feature_extractor.do_normalize = True  # not padding alone: the processor is used
    assert raw_audio_layout(normalising) is None
    via_processor = model_inputs(normalising, bank, utts[:3], torch.device("cpu"))
    reference = normalising(audio=waves[:3], sampling_rate=16000, return_tensors="pt")
    assert torch.equal(via_processor["input_values"], reference["input_values"])
