"""On a GPU: train step time and evaluation real-time factor of the full Moonshine streaming-tiny
architecture (random weights, built from orchestrator/training/architectures/), in bf16 autocast.

Skipped (one line saying so) when no CUDA device is visible. The step times come from
bench.train_step (ours, bare loop and Seq2SeqTrainer with bf16=True, side by side); the
real-time factor is evaluation wall time / seconds of speech for the 500-utterance manifest,
batched as runs evaluate.

    .venv/bin/python -m bench.gpu [--no-bf16] [--n 500]
"""
from __future__ import annotations

import argparse

from bench.common import Result


def measure(*, bf16: bool = True, n: int = 500) -> list[Result]:
    import torch

    if not torch.cuda.is_available():
        print("  gpu: skipped (no CUDA device visible)")
        return []
    from bench import evaluation, train_step
    from bench.common import streaming_tiny_random

    setting = train_step.SETTINGS["streaming_tiny"]
    results = train_step.measure(setting, steps=20, rounds=2, device="cuda", bf16=bf16)
    results += evaluation.measure(n, device="cuda", bf16=bf16, model_path=streaming_tiny_random(),
                                  tokens_per_second=6.5, one_at_a_time=False)
    return results


def main(argv=None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="float32 instead of bf16 autocast")
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args(argv)
    results = measure(bf16=args.bf16, n=args.n)
    for r in results:
        print(r.line())
    return results


if __name__ == "__main__":
    main()
