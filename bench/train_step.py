"""Train step time of three loops on the same model, data and batch size, measured side by side.

  ours     `orchestrator.train.run`: the real runner (bucketed batches from the training stream,
           audio from the disk cache, model_inputs per step, AdamW + linear schedule, clipping)
  bare     a bare PyTorch loop over pre-decoded, pre-padded tensors of the *same* batches
  Trainer  transformers' Seq2SeqTrainer + peft LoRA with the same targets, its defaults otherwise
           (random sampler, no length grouping) and the usual speech seq2seq collator

Every loop is timed by the same instrument, torch's global optimizer step hook (StepClock): a
step is the time between two optimizer steps, the first WARMUP steps excluded. Rounds alternate
the order of the loops so drift on a shared machine hits all three alike.
ours / bare is the median of per-step ratios (step k of both loops trains on the same batch);
Trainer / ours is the ratio of mean step times (their batches differ: that is the point).
With one torch thread on the CPU (the default of `python -m bench`) the ratios use process CPU
time, which other processes on the shared cores barely move; wall-time ratios are printed beside.

    .venv/bin/python -m bench.train_step [--model tiny_random|streaming_tiny] [--device cuda --bf16]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import (CACHE, Result, StepClock, median, speech_manifest, streaming_tiny_random, sub_manifest,
                          tiny_random)

WARMUP = 2


@dataclass(frozen=True)
class Setting:
    name: str
    build: object  # () -> checkpoint folder
    batch_size: int
    steps: int  # measured steps per loop and round (WARMUP more are run)
    rounds: int


SETTINGS = {
    "tiny_random": Setting("tiny_random", tiny_random, batch_size=8, steps=12, rounds=6),
    "streaming_tiny": Setting("streaming_tiny", streaming_tiny_random, batch_size=8, steps=6, rounds=3),
    # bench/gpu.py: a batch that gives a GPU real work (the runner's default is 8), more steps
    "streaming_tiny_gpu": Setting("streaming_tiny", streaming_tiny_random, batch_size=32, steps=40, rounds=2),
}
QUICK = {"tiny_random": (8, 1), "streaming_tiny": (3, 1), "streaming_tiny_gpu": (4, 1)}  # --quick: (steps, rounds)
CPU_SETTINGS = ("tiny_random", "streaming_tiny")  # what `python -m bench` times on the CPU


def make_spec(setting: Setting, steps: int, work: Path, registry: str, device: str, bf16: bool = False,
              *extra: str):
    """The run spec of one round: run folders, audio cache and registry under `work` (temporary)."""
    from orchestrator.config.spec import spec_from_overrides

    speech = speech_manifest()
    tiny_eval = sub_manifest(speech, 2, "eval-2")  # the runner evaluates at step 0 and the end: not timed
    return spec_from_overrides([
        "+exp=smoke_tiny_random", f"model.id={setting.build()}", "model.build=null", "model.tokens_per_second=2",
        f"optim.steps={steps}", f"eval.interval={steps}", f"optim.batch_size={setting.batch_size}",
        f"data.train_manifest={speech}", f"eval.domain_manifest={tiny_eval}", f"eval.heldout_manifest={tiny_eval}",
        f"registry.url=sqlite:///{work / registry}", f"output_dir={work / 'outputs'}", "rerun=true",
        f"device={device}", f"precision={'bf16' if bf16 else 'fp32'}", *extra])


def autocast(device, bf16: bool):
    """What the bare loop wraps its forward in (ours runs in the spec's precision by itself)."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def model_with_adapter(spec):
    import torch

    from orchestrator.training import adapter, modeling, targets

    device = modeling.resolve_device(spec.device)
    model, processor = modeling.load(spec.model, device)
    resolution = targets.resolve(model, spec.targets)
    torch.manual_seed(spec.optim.seed)
    return adapter.attach(model, spec.adapter, resolution), processor, device


def padding(batches_lengths: list[list[int]]) -> float:
    return sum(max(b) * len(b) for b in batches_lengths) / sum(sum(b) for b in batches_lengths)


def run_ours(spec, bf16: bool = False) -> StepClock:
    """The real runner, in the spec's own precision (`precision=bf16`: its autocast, not ours).
    The clock's `run` is the registry row (peak memory, throughput)."""
    from orchestrator.training import modeling, loop as train
    from orchestrator.registry import Store

    device = modeling.resolve_device(spec.device)
    store = Store(spec.registry.url)
    try:
        with StepClock(device.type == "cuda") as clock:
            clock.run = store.get_run(train.run(spec, store, progress=False))
    finally:
        store.close()
    return clock


def ours_batches(spec):
    from orchestrator.data.batching import training_stream
    from orchestrator.data.manifest import read_manifest

    stream = training_stream(read_manifest(spec.data.train_manifest), spec.optim.batch_size, spec.optim.seed,
                             batching=spec.data.batching)
    return [next(stream) for _ in range(spec.optim.steps)]


def run_bare(spec, bf16: bool) -> StepClock:
    import torch
    from transformers import get_linear_schedule_with_warmup

    from orchestrator.artifacts.run_folder import audio_cache_dir as cache_dir
    from orchestrator.data.batching import AudioBank, model_inputs

    model, processor, device = model_with_adapter(spec)
    batches = ours_batches(spec)
    bank = AudioBank(spec.data, cache_dir=cache_dir(spec.output_dir))
    bank.prepare(u.audio_filepath for b in batches for u in b)
    inputs = [model_inputs(processor, bank, b, device) for b in batches]  # pre-decoded, pre-padded
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.optim.lr, weight_decay=spec.optim.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, spec.warmup_steps, spec.optim.steps)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with StepClock(device.type == "cuda") as clock:
        for batch in inputs:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, spec.optim.grad_clip)
            optimizer.step()
            scheduler.step()
    clock.peak_mb = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return clock


class SpeechCollator:
    """The usual speech seq2seq collator (as in transformers' ASR fine-tuning guides): the
    processor pads the audio, the tokenizer pads the labels, padding labels become -100."""

    def __init__(self, processor):
        self.processor = processor
        self.lengths: list[list[int]] = []

    def __call__(self, features):
        audio = [f["input_values"] for f in features]
        self.lengths.append([a.size for a in audio])
        batch = self.processor(audio=audio, sampling_rate=16000, return_tensors="pt")
        labels = self.processor.tokenizer.pad([{"input_ids": f["labels"]} for f in features], return_tensors="pt")
        batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
        return dict(batch)


def run_trainer(spec, bf16: bool, out: Path) -> tuple[StepClock, float]:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    from orchestrator.artifacts.run_folder import audio_cache_dir as cache_dir
    from orchestrator.data.batching import AudioBank
    from orchestrator.data.manifest import read_manifest

    model, processor, device = model_with_adapter(spec)
    utts = read_manifest(spec.data.train_manifest)
    bank = AudioBank(spec.data, cache_dir=cache_dir(spec.output_dir))
    bank.prepare(u.audio_filepath for u in utts)
    eos = processor.tokenizer.eos_token_id
    ids = processor.tokenizer([u.text for u in utts], add_special_tokens=False).input_ids
    dataset = [{"input_values": bank[u.audio_filepath], "labels": i + [eos]} for u, i in zip(utts, ids)]
    collator = SpeechCollator(processor)
    args = Seq2SeqTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=spec.optim.batch_size, max_steps=spec.optim.steps,
        learning_rate=spec.optim.lr, seed=spec.optim.seed, report_to="none", disable_tqdm=True,
        save_strategy="no", use_cpu=device.type == "cpu", bf16=bf16)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    with StepClock(device.type == "cuda") as clock:
        trainer.train()
    return clock, padding(collator.lengths)


def measure(setting: Setting, *, steps: int, rounds: int, device: str = "cpu", bf16: bool = False,
            trainer: bool = True) -> list[Result]:
    import time

    import torch

    from orchestrator.data.batching import AudioBank, model_inputs

    # one torch thread on the CPU: CPU time is the step's own cost (see StepClock); else wall time
    cpu = device == "cpu" and torch.get_num_threads() == 1
    clocks: dict[str, list[StepClock]] = {"ours": [], "bare": [], "trainer": []}
    trainer_padding = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for r in range(rounds):
            spec = make_spec(setting, steps + WARMUP, Path(tmp), f"registry-{r}.db", device, bf16)
            order = ["ours", "bare", "trainer"] if r % 2 == 0 else ["trainer", "bare", "ours"]
            order = [loop for loop in order if trainer or loop != "trainer"]
            for loop in order:
                started = time.perf_counter()
                if loop == "ours":
                    clocks["ours"].append(run_ours(spec, bf16))
                elif loop == "bare":
                    clocks["bare"].append(run_bare(spec, bf16))
                else:
                    clock, pad = run_trainer(spec, bf16, Path(tmp) / f"trainer-{r}")
                    clocks["trainer"].append(clock)
                    trainer_padding.append(pad)
                last = clocks[loop][-1]
                wall, cpu_s = median(last.step_times(WARMUP)), median(last.step_times(WARMUP, cpu=True))
                print(f"  {setting.name} round {r + 1}/{rounds} {loop}: median step {wall:.3f} s wall, "
                      f"{cpu_s:.3f} s CPU "
                      f"({time.perf_counter() - started:.0f} s with setup)", flush=True)

        # what model_inputs costs per step, vs the processor it replaces (the same batches)
        _, processor, device_ = model_with_adapter(spec)
        batches = ours_batches(spec)
        bank = AudioBank(spec.data)
        bank.prepare(u.audio_filepath for b in batches for u in b)
        ours_calls, processor_calls = [], []
        for _ in range(5):  # alternating, batch by batch; the median of each
            for b in batches:
                started = time.perf_counter()
                model_inputs(processor, bank, b, device_)
                ours_calls.append(time.perf_counter() - started)
                started = time.perf_counter()
                processor(audio=[bank[u.audio_filepath] for u in b], sampling_rate=16000, return_tensors="pt")
                processor_calls.append(time.perf_counter() - started)
        inputs_s, processor_s = median(ours_calls), median(processor_calls)

    def pooled(loop: str, on_cpu: bool) -> list[float]:
        return [t for clock in clocks[loop] for t in clock.step_times(WARMUP, cpu=on_cpu)]

    def paired(on_cpu: bool) -> list[float]:  # step k of both loops trained on the same batch
        return [o / b for oc, bc in zip(clocks["ours"], clocks["bare"])
                for o, b in zip(oc.step_times(WARMUP, cpu=on_cpu), bc.step_times(WARMUP, cpu=on_cpu))]

    ours, bare = pooled("ours", cpu), pooled("bare", cpu)
    wall_bare = median(paired(False))
    ours_pad = padding([[round(u.duration * 16000) for u in b] for b in ours_batches(spec)])
    kind = "CPU" if cpu else "wall"
    tag = f"{setting.name}, batch {setting.batch_size}, {device}{' bf16' if bf16 else ''}"
    peak = []
    if device == "cuda":  # ours: what its registry row recorded; bare: measured around its loop
        ours_peak = max(c.run.peak_memory_mb for c in clocks["ours"])
        bare_peak = max(c.peak_mb for c in clocks["bare"])
        peak = [Result(f"peak GPU memory ({tag}): ours / bare loop", ours_peak, bare_peak, ours_peak / bare_peak, None,
                       unit="MB", note="torch.cuda.max_memory_allocated; ours as its registry row records it "
                                       "(training and its two 2-utterance evaluations)")]
    return peak + [
        Result(f"train step ({tag}): ours / bare loop", median(ours), median(bare), median(paired(cpu)), "<= 1.05",
               note=f"median {kind} s per step; ratio = median of {len(ours)} paired per-step ratios "
                    f"({len(clocks['ours'])} rounds); wall-time ratio {wall_bare:.3f}"),
        *([_trainer_result(tag, kind, ours, pooled("trainer", cpu), pooled("ours", False), pooled("trainer", False),
                           ours_pad, trainer_padding)] if trainer else []),
        Result(f"model_inputs per batch ({tag}): ours (padding + labels) vs the processor call", inputs_s * 1000,
               processor_s * 1000, None, None, unit="ms",
               note=f"median wall ms of {len(ours_calls)} calls each; {100 * inputs_s / median(ours):.1f}% of "
                    "our median step"),
    ]


def _trainer_result(tag: str, kind: str, ours: list[float], trainer: list[float], ours_wall: list[float],
                    trainer_wall: list[float], ours_pad: float, trainer_padding: list[float]) -> Result:
    return Result(f"train step ({tag}): Seq2SeqTrainer / ours", statistics.mean(ours), statistics.mean(trainer),
                  statistics.mean(trainer) / statistics.mean(ours), ">= 1.3",
                  note=f"mean {kind} s per step, {len(ours)} steps each; wall-time ratio "
                       f"{statistics.mean(trainer_wall) / statistics.mean(ours_wall):.3f}; "
                       f"padding ours {ours_pad:.2f}x, Trainer {statistics.mean(trainer_padding):.2f}x")


def main(argv=None) -> list[Result]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in all three loops")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="few steps, one round: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for name in (CPU_SETTINGS if args.model == "all" else [args.model]):
        steps, rounds = QUICK[name] if args.quick else (SETTINGS[name].steps, SETTINGS[name].rounds)
        results += measure(SETTINGS[name], steps=steps, rounds=rounds, device=args.device, bf16=args.bf16)
    for r in results:
        print(r.line())
    return results


if __name__ == "__main__":
    main()
