"""The encoder cache's saving: the real runner with `optim.cache_encoder=auto` vs `off`, side by side.

Same base model (demo/base/), data (the demo's domain_train manifest), targets and recipe as
bench/upstream.py's "ours" (decoder self-attention q/k/v, LoRA r 8, batch 8, LR 1e-3, seed 42);
only the step's inputs differ. Rounds alternate the order. Two numbers per setting:
  s/step      mean process CPU time between optimizer steps (StepClock, first WARMUP excluded),
              one torch thread: the cache build happens before step 1, outside every step
  whole run   wall seconds of `train.run` (model load, audio cache, the cache build: one encoder
              pass per training utterance, both evaluations on a 2-utterance manifest, saving)

    .venv/bin/python -m bench.encoder_cache [--steps 150] [--rounds 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import CACHE, Result, StepClock

WARMUP = 2


def spec_for(cache: str, steps: int, work: Path, train: Path, tiny: Path):
    from orchestrator.config.spec import spec_from_overrides

    return spec_from_overrides([
        "+exp=demo_decoder_only", "experiment=bench_encoder_cache", "targets.components=[decoder]",
        "targets.kinds=[self_attn]", "targets.exclude=[.*o_proj]", "adapter=lora", "adapter.r=8", "adapter.alpha=8",
        "adapter.dropout=0.0", "optim.lr=1e-3", f"optim.steps={steps}", "optim.batch_size=8", "optim.seed=42",
        "optim.warmup_ratio=0.1", f"optim.cache_encoder={cache}", f"data.train_manifest={train}",
        "data.replay_manifest=null", "data.replay_fraction=0.0", f"eval.interval={steps}",
        f"eval.domain_manifest={tiny}", f"eval.heldout_manifest={tiny}", f"output_dir={work / cache}",
        f"registry.url=sqlite:///{work / f'{cache}.db'}", "device=cpu", "rerun=true"])


def main(argv=None) -> list[Result]:
    import torch

    from bench.upstream import demo_manifests, read_rows, write_ours
    from orchestrator.registry import Store
    from orchestrator.training import loop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    source = demo_manifests()
    steps: dict[str, list[float]] = {"auto": [], "off": []}
    walls: dict[str, list[float]] = {"auto": [], "off": []}
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = Path(tmp)
        train = write_ours(read_rows(source / "domain_train.jsonl")[:-16], work / "train.jsonl")
        tiny = write_ours(read_rows(source / "heldout.jsonl")[:2], work / "heldout-2.jsonl")
        for r in range(args.rounds):
            for cache in (("auto", "off") if r % 2 == 0 else ("off", "auto")):
                (work / f"r{r}").mkdir(exist_ok=True)
                spec = spec_for(cache, args.steps, work / f"r{r}", train, tiny)
                store = Store(spec.registry.url)
                started = time.perf_counter()
                with StepClock() as clock:
                    loop.run(spec, store, progress=False)
                walls[cache].append(time.perf_counter() - started)
                store.close()
                times = clock.step_times(WARMUP, cpu=True)
                steps[cache] += times
                print(f"  round {r + 1}/{args.rounds} cache_encoder={cache}: {statistics.mean(times):.4f} s/step CPU, "
                      f"{walls[cache][-1]:.1f} s whole run", flush=True)
    auto, off = statistics.mean(steps["auto"]), statistics.mean(steps["off"])
    results = [
        Result("train step (demo base, dec self-attn qkv r8, batch 8): cached / uncached encoder", auto, off,
               auto / off, None, note=f"mean CPU s per step, {len(steps['auto'])} steps each, one thread"),
        Result("whole run incl. the cache build: cached / uncached", statistics.mean(walls["auto"]),
               statistics.mean(walls["off"]), statistics.mean(walls["auto"]) / statistics.mean(walls["off"]), None,
               note=f"mean wall s of train.run, {args.steps} steps, {args.rounds} rounds"),
    ]
    for result in results:
        print(result.line())
    return results


if __name__ == "__main__":
    main()
