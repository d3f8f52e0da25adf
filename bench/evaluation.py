"""Evaluation of a 500-utterance manifest of espeak-ng speech with `orchestrator.evaluate`.

  batched       the evaluator as runs use it: longest-first batches of eval.batch_size, one
                generate per batch with a token budget bound to the batch's longest utterance
  one at a time the same evaluator with batch size 1
  cold / warm   the first evaluation with an empty decoded-audio cache (it decodes the manifest
                and writes the cache entry) vs a second one in a fresh AudioBank (a new run)
                reading the entry back; also the audio preparation alone, cold vs warm

Same model (tiny_random with a LoRA adapter, as a run evaluates it), same manifest, same settings.
As in bench.train_step, with one torch thread the ratios use process CPU time (wall time beside).

    .venv/bin/python -m bench.evaluation [--n 500] [--device cuda --bf16]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import CACHE, Result, speech_manifest, tiny_random


def load(model_path: Path, device: str, tokens_per_second: float | None = None):
    """The model with a LoRA adapter as a run attaches it, and the run settings (default eval conf)."""
    import torch

    from orchestrator.training import adapter, modeling, targets
    from orchestrator.config.spec import spec_from_overrides

    budget = [] if tokens_per_second is None else [f"model.tokens_per_second={tokens_per_second}"]
    spec = spec_from_overrides(["model=tiny_random", f"model.id={model_path}", "model.build=null",
                                f"device={device}", *budget])
    torch_device = modeling.resolve_device(spec.device)
    model, processor = modeling.load(spec.model, torch_device)
    torch.manual_seed(0)
    return adapter.attach(model, spec.adapter, targets.resolve(model, spec.targets)), processor, spec, torch_device


class Timed:
    """Wall and process CPU seconds of one call; `.s` is the one the ratios use (see StepClock)."""

    def __init__(self, fn, use_cpu: bool):
        wall, cpu = time.perf_counter(), time.process_time()
        self.out = fn()
        self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.s = self.cpu if use_cpu else self.wall


def measure(n: int = 500, *, device: str = "cpu", bf16: bool = False, model_path: Path | None = None,
            tokens_per_second: float | None = None, one_at_a_time: bool = True,
            realtime_target: str | None = None) -> list[Result]:
    import torch

    from orchestrator.data.batching import AudioBank
    from orchestrator.training.evaluate import batch_seconds_for, evaluate
    from orchestrator.data.manifest import read_manifest

    utts = read_manifest(speech_manifest(500))[:n]
    audio_s = sum(u.duration for u in utts)
    model, processor, spec, torch_device = load(model_path or tiny_random(), device, tokens_per_second)
    seconds = batch_seconds_for(spec.eval, torch_device)  # as a run batches: by audio seconds on a GPU
    kw = dict(tokens_per_second=spec.model.tokens_per_second, device=torch_device, progress=False,
              precision="bf16" if bf16 else "fp32")
    use_cpu = torch_device.type == "cpu" and torch.get_num_threads() == 1  # one thread: CPU time is its own cost
    kind = "CPU" if use_cpu else "wall"
    batch = spec.eval.batch_size
    batching = f"batch {batch}" if seconds is None else f"batches of {seconds:g} padded audio seconds"
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        evaluate(model, processor, AudioBank(spec.data), utts[:batch], batch_size=batch, **kw)  # warm-up, untimed
        cold = AudioBank(spec.data, cache_dir=Path(tmp))
        prep_cold = Timed(lambda: cold.prepare(u.audio_filepath for u in utts), use_cpu=False)
        shutil.rmtree(tmp)
        Path(tmp).mkdir()
        first = Timed(lambda: evaluate(model, processor, AudioBank(spec.data, cache_dir=Path(tmp)), utts,
                                       batch_size=batch, batch_seconds=seconds, **kw), use_cpu)
        print(f"  evaluation, cold cache: {first.wall:.1f} s wall, {first.cpu:.1f} s CPU", flush=True)
        warm = AudioBank(spec.data, cache_dir=Path(tmp))
        prep_warm = Timed(lambda: warm.prepare(u.audio_filepath for u in utts), use_cpu=False)
        second = Timed(lambda: evaluate(model, processor, AudioBank(spec.data, cache_dir=Path(tmp)), utts,
                                        batch_size=batch, batch_seconds=seconds, **kw), use_cpu)
        print(f"  evaluation, warm cache: {second.wall:.1f} s wall, {second.cpu:.1f} s CPU", flush=True)
        if one_at_a_time:
            single = Timed(lambda: evaluate(model, processor, warm, utts, batch_size=1, **kw), use_cpu)
            print(f"  evaluation, one at a time: {single.wall:.1f} s wall, {single.cpu:.1f} s CPU", flush=True)
    tag = f"{Path(spec.model.id).name}, {n} utterances, {audio_s / 60:.1f} min of speech, " \
          f"{device}{' bf16' if bf16 else ''}"
    speed = audio_s / second.wall
    results = [Result(f"evaluation speed ({tag}): x real time", speed, None, speed if realtime_target else None,
                      realtime_target, unit="x",
                      note=f"{batching}: {second.wall:.2f} s wall for {audio_s:.0f} s of speech (warm audio cache), "
                           f"{n / second.wall:.0f} utterances/s")]
    if one_at_a_time:
        results.append(Result(f"evaluation ({tag}): one at a time / batched", second.s, single.s, single.s / second.s,
                              ">= 5", note=f"{kind} s; batch {batch}, longest first, token budget "
                                           f"{spec.model.tokens_per_second:g}/s of the longest; "
                                           f"wall-time ratio {single.wall / second.wall:.2f}"))
    return results + [
        Result(f"evaluation ({tag}): first (cold audio cache) / second (warm)", second.s, first.s,
               first.s / second.s, None, note=f"{kind} s; model time dominates: the cache saves the decoding"),
        Result(f"audio preparation ({tag}): cold / warm cache", prep_warm.s, prep_cold.s, prep_cold.s / prep_warm.s,
               None, note="wall s; 16 kHz WAV decodes fast; warm = hash the files + map the entry"),
    ]


def main(argv=None) -> list[Result]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="utterances (default: %(default)s)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure(args.n, device=args.device, bf16=args.bf16)
    for r in results:
        print(r.line())
    return results


if __name__ == "__main__":
    main()
