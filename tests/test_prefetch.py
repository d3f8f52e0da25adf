"""Batches prepared ahead on a background thread, and evaluation batches by audio seconds."""
from __future__ import annotations

import threading

import pytest
import torch

from orchestrator.data.batching import AudioBank, model_inputs, training_stream
from orchestrator.data.manifest import Utterance, read_manifest
from orchestrator.data.prefetch import Prefetcher
from orchestrator.training.evaluate import CUDA_BATCH_SECONDS, batch_seconds_for, eval_batches
from orchestrator.config.schema import DataConf, EvalConf


def test_prefetched_inputs_are_the_inline_ones_in_the_same_order(speech, tiny_checkpoint):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    utts = read_manifest(speech["train"])
    bank = AudioBank(DataConf())
    prepare = lambda batch: model_inputs(processor, bank, batch, torch.device("cpu"))  # noqa: E731
    inline = Prefetcher(training_stream(utts, 4, 7), prepare, depth=0)
    ahead = Prefetcher(training_stream(utts, 4, 7), prepare, depth=3)
    with ahead:
        for _ in range(12):  # three epochs of 16 utterances
            a, b = next(inline), next(ahead)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_worker_runs_ahead_on_its_own_thread_and_stops_when_closed():
    threads, seen = [], []

    def prepare(x):
        threads.append(threading.current_thread().name)
        return x * 10

    feed = Prefetcher(iter(range(1000)), prepare, depth=2)
    assert [next(feed) for _ in range(5)] == [0, 10, 20, 30, 40]
    feed.close()
    assert set(threads) == {"batch-prefetch"} and len(threads) <= 5 + 2 + 1  # at most depth ahead (+1 in hand)
    assert not any(t.name == "batch-prefetch" and t.is_alive() for t in threading.enumerate())


def test_an_error_while_preparing_is_raised_in_the_consumer_at_its_batch():
    def prepare(x):
        if x == 3:
            raise ValueError("bad audio at 3")
        return x

    with Prefetcher(iter(range(10)), prepare, depth=2) as feed:
        assert [next(feed) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad audio at 3"):
            next(feed)


def test_a_finite_source_ends_the_iteration():
    with Prefetcher(iter("abc"), str.upper, depth=4) as feed:
        assert list(feed) == ["A", "B", "C"]


def test_the_worker_enters_the_context_it_is_given():
    with Prefetcher(iter([torch.ones(2, 2)]), lambda x: x @ x, depth=1,
                    context=lambda: torch.autocast("cpu", dtype=torch.bfloat16)) as feed:
        assert next(feed).dtype == torch.bfloat16


def _utts(durations: list[float]) -> list[Utterance]:
    return [Utterance(audio_filepath=f"{i}.wav", text="x", duration=d, line=i + 1) for i, d in enumerate(durations)]


def test_eval_batches_by_count_are_longest_first():
    utts = _utts([1.0, 3.0, 2.0, 5.0, 4.0])
    assert eval_batches(utts, batch_size=2) == [[3, 4], [1, 2], [0]]


def test_eval_batches_by_seconds_fit_the_padded_budget_and_cover_every_utterance():
    durations = [0.5 + (7 * i % 23) / 2 for i in range(200)]  # 0.5 .. 11.5 s
    utts = _utts(durations)
    batches = eval_batches(utts, batch_size=16, batch_seconds=60.0)
    assert sorted(i for b in batches for i in b) == list(range(200))
    flat = [durations[i] for b in batches for i in b]
    assert flat == sorted(durations, reverse=True)  # longest first, as the count batches
    for b in batches:  # the batch pads to its first (longest) utterance
        assert len(b) * durations[b[0]] <= 60.0
    assert max(len(b) for b in batches) > 16 > min(len(b) for b in batches)  # short ones share big batches
    too_long = eval_batches(_utts([90.0, 1.0]), batch_size=16, batch_seconds=60.0)
    assert too_long == [[0], [1]]  # an utterance longer than the budget is a batch of its own


def test_a_gpu_gets_a_seconds_budget_by_default_the_cpu_a_count():
    assert batch_seconds_for(EvalConf(), torch.device("cpu")) is None
    assert batch_seconds_for(EvalConf(), torch.device("cuda")) == CUDA_BATCH_SECONDS
    assert batch_seconds_for(EvalConf(batch_seconds=30.0), torch.device("cpu")) == 30.0
