"""On a GPU, side by side in one run: the runner against a bare loop and against transformers'
Seq2SeqTrainer, the evaluation speed, and peak memory, on the full Moonshine streaming-tiny
architecture (random weights, orchestrator/training/architectures/; 44M parameters).

  train step, bf16   ours (`precision=bf16`: the runner's autocast, batches prepared ahead, no host
                     sync per step) / a bare PyTorch loop over pre-built tensors of the same batches
                     in bf16 autocast (target <= 1.05); Seq2SeqTrainer + peft with `bf16=True` /
                     ours (target >= 1.3); batch 32, 40 measured steps, 2 rounds (bench.train_step)
  train step, fp32   ours / bare, TF32 matmuls (what precision=fp32 gets on Ampere+)
  peak memory        torch.cuda.max_memory_allocated of ours (its registry row) and of the bare loop
  evaluation         500 espeak-ng utterances (32 min of speech) through `evaluate`, bf16, batched
                     by padded audio seconds as runs batch on a GPU: seconds of speech per second
                     (target >= 1,000x; Moonshine tiny's own figure is about 2,062x at batch 256 on
                     the Open ASR sets). Random weights rarely emit EOS, so every utterance decodes
                     to its full token budget: a pessimistic speed.

About 3 to 5 minutes on one H100 (most of it model loading and the runner's own setup, outside
every timed step). Without a CUDA device it prints one line and exits 0. `--write` puts the table
into bench/RESULTS.md's GPU section, naming the device.

    .venv/bin/python -m bench.gpu [--n 500] [--quick] [--write]
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import Result, machine

SECTION = "## On a GPU (`python -m bench.gpu`)"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def measure(*, n: int = 500, quick: bool = False) -> list[Result]:
    import torch

    if not torch.cuda.is_available():
        print("  gpu: skipped (no CUDA device visible; run `python -m bench.gpu` on a GPU machine)")
        return []
    from bench import evaluation, train_step
    from bench.common import streaming_tiny_random

    setting = train_step.SETTINGS["streaming_tiny_gpu"]
    steps, rounds = train_step.QUICK["streaming_tiny_gpu"] if quick else (setting.steps, setting.rounds)
    results = train_step.measure(setting, steps=steps, rounds=rounds, device="cuda", bf16=True)
    results += train_step.measure(setting, steps=steps, rounds=rounds, device="cuda", bf16=False, trainer=False)
    results += evaluation.measure(48 if quick else n, device="cuda", bf16=True, model_path=streaming_tiny_random(),
                                  tokens_per_second=6.5, one_at_a_time=False, realtime_target=">= 1000")
    return results


def write_section(results: list[Result], started: datetime, minutes: float) -> None:
    """bench/RESULTS.md's GPU section, replaced whole (the rest of the file is kept)."""
    from bench.__main__ import table_rows

    info = machine()
    lines = [SECTION, "", f"Written by `.venv/bin/python -m bench.gpu --write` (see its docstring) on "
             f"{info['GPU']}.", "", f"- Date: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min in all",
             *[f"- {k[0].upper() + k[1:]}: {v}" for k, v in info.items()], "", *table_rows(results), ""]
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        text = head.rstrip("\n") + ("" if nxt < 0 else "\n\n" + rest[nxt + 1:].rstrip("\n"))
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines))


def main(argv=None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="evaluation utterances (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="few steps, one round, 48 utterances: a smoke test")
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    results = measure(n=args.n, quick=args.quick)
    for r in results:
        print(r.line())
    if results:
        missed = sum(r.passed is False for r in results)
        print(f"{sum(r.passed is True for r in results)} targets met, {missed} missed "
              f"({(time.perf_counter() - clock) / 60:.1f} min)")
        if args.write and not args.quick:
            write_section(results, started, (time.perf_counter() - clock) / 60)
            print(f"wrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
