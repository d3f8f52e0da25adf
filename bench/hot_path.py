"""The runner's hot path on the full-size streaming-tiny architecture, on the CPU, side by side:

  prefetch   `data.prefetch=2` (batches prepared ahead on a background thread, the default) vs
             `data.prefetch=0` (each batch built on the main thread when the step asks for it, as
             the runner did before): the background thread must not slow a CPU step (target: <= 1.02)
  bf16       `precision=bf16` (autocast) vs `precision=fp32`: reported, not required to be faster
             (a CPU without native bf16 emulates it)

Every loop is the real runner (`orchestrator.training.loop.run`) on the same batches; the ratios are
medians of per-step ratios (step k of both loops trains on the same batch), timed by StepClock.
Rounds alternate the order. With one torch thread the ratios use process CPU time, which counts
the prefetch thread's work too (so it measures the cost, not the overlap a second core gives);
the wall-time ratios are printed beside.

    .venv/bin/python -m bench.hot_path [--steps 6] [--rounds 3]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import CACHE, Result, StepClock, median

WARMUP = 2


def _paired(a: list[StepClock], b: list[StepClock], cpu: bool) -> list[float]:
    return [x / y for ca, cb in zip(a, b) for x, y in zip(ca.step_times(WARMUP, cpu=cpu), cb.step_times(WARMUP, cpu=cpu))]


def measure(*, steps: int = 6, rounds: int = 3, model: str = "streaming_tiny") -> list[Result]:
    import torch

    from bench import train_step

    setting = train_step.SETTINGS[model]
    cpu = torch.get_num_threads() == 1
    variants = {"prefetch": ("data.prefetch=2",), "inline": ("data.prefetch=0",),
                "bf16": ("precision=bf16",), "fp32": ("precision=fp32",)}
    clocks: dict[str, list[StepClock]] = {name: [] for name in variants}
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                spec = train_step.make_spec(setting, steps + WARMUP, Path(tmp), f"{name}-{r}.db", "cpu", False,
                                            *variants[name])
                clocks[name].append(train_step.run_ours(spec))
                last = clocks[name][-1]
                print(f"  hot path {setting.name} round {r + 1}/{rounds} {name}: median step "
                      f"{median(last.step_times(WARMUP)):.3f} s wall, {median(last.step_times(WARMUP, cpu=True)):.3f} s CPU",
                      flush=True)
    kind = "CPU" if cpu else "wall"
    tag = f"{setting.name}, batch {setting.batch_size}, cpu"

    def result(a: str, b: str, title: str, target: str | None, note: str) -> Result:
        ours = [t for c in clocks[a] for t in c.step_times(WARMUP, cpu=cpu)]
        other = [t for c in clocks[b] for t in c.step_times(WARMUP, cpu=cpu)]
        return Result(f"train step ({tag}): {title}", median(ours), median(other), median(_paired(clocks[a], clocks[b], cpu)),
                      target, note=f"median {kind} s per step; ratio = median of {len(ours)} paired per-step ratios "
                                   f"({rounds} rounds); wall-time ratio {median(_paired(clocks[a], clocks[b], False)):.3f}; "
                                   + note)

    return [
        result("prefetch", "inline", "batches prepared ahead on a thread / on the main thread", "<= 1.02",
               "data.prefetch=2 vs 0, both fp32; CPU time includes the prefetch thread"),
        result("bf16", "fp32", "bf16 autocast / fp32", None,
               f"reported only; {torch.backends.cpu.get_cpu_capability()} CPU"),
    ]


def main(argv=None) -> list[Result]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="streaming_tiny", choices=("streaming_tiny", "tiny_random"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure(steps=args.steps, rounds=args.rounds, model=args.model)
    for r in results:
        print(r.line())
    return results


if __name__ == "__main__":
    main()
