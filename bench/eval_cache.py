"""Evaluation with and without the encoder cache, on the demo's decoder-only runs, side by side.

A run of `+exp=demo_decoder_only` (demo/base, LoRA on the decoder's attention and MLP: the encoder
is frozen) evaluates its domain, heldout and dev sets at every interval (steps 0, 50, 100). Here
the same model evaluates those sets at that many intervals twice, the adapter moved between
intervals as training moves it (the same moves for both):

  uncached  every interval encodes every batch (what runs did before)
  cached    the run's evaluation cache (training/eval_cache.py): the first interval encodes each
            batch once, later ones decode from the kept states

and checks that both produced the same hypotheses and losses. Ratio: uncached / cached time of all
the intervals (target >= 1.3). With one torch thread, process CPU time (wall beside).

    .venv/bin/python -m bench.eval_cache [--intervals N] [--limit N]
"""
from __future__ import annotations

import argparse
import time

from bench.common import Result


def measure(*, intervals: int | None = None, limit: int | None = None) -> list[Result]:
    import torch

    from bench.upstream import demo_manifests
    from orchestrator.config.spec import spec_from_overrides
    from orchestrator.data.batching import AudioBank
    from orchestrator.data.manifest import read_manifest
    from orchestrator.training import adapter, eval_cache, modeling, targets
    from orchestrator.training.evaluate import evaluate

    folder = demo_manifests()
    spec = spec_from_overrides(["+exp=demo_decoder_only", f"eval.domain_manifest={folder / 'domain_eval.jsonl'}",
                                f"eval.heldout_manifest={folder / 'heldout.jsonl'}",
                                f"eval.select_manifest={folder / 'domain_dev.jsonl'}", "device=cpu"])
    intervals = intervals or len(spec.eval_steps)
    sets = {name: read_manifest(path)[:limit] for name, path in spec.manifests.items()
            if name in ("domain", "heldout", "select")}
    model, processor = modeling.load(spec.model, torch.device("cpu"))
    torch.manual_seed(0)
    model = adapter.attach(model, spec.adapter, targets.resolve(model, spec.targets))
    assert eval_cache.encoder_frozen(model) is None
    bank = AudioBank(spec.data)
    for utts in sets.values():
        bank.prepare(u.audio_filepath for u in utts)
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in trainable]
    cpu = torch.get_num_threads() == 1
    kw = dict(batch_size=spec.eval.batch_size, tokens_per_second=spec.model.tokens_per_second,
              device=torch.device("cpu"), progress=False)

    def campaign(cache) -> tuple[float, float, list]:
        with torch.no_grad():
            for p, p0 in zip(trainable, start):
                p.copy_(p0)
        generator = torch.Generator().manual_seed(1)
        wall, proc, out = time.perf_counter(), time.process_time(), []
        for _ in range(intervals):
            for name, utts in sets.items():
                result = evaluate(model, processor, bank, utts, with_loss=name == "domain", encoder_cache=cache, **kw)
                out.append(([u.hypothesis for u in result.utterances], result.loss, result.wer))
            with torch.no_grad():  # what an interval of training does to the adapter
                for p in trainable:
                    p.add_(0.002 * torch.randn(p.shape, generator=generator))
        return time.perf_counter() - wall, time.process_time() - proc, out

    plain = campaign(None)
    print(f"  uncached: {plain[0]:.1f} s wall, {plain[1]:.1f} s CPU", flush=True)
    cache = eval_cache.EvalEncoderCache(spec.eval.cache_encoder_max_mb)
    cached = campaign(cache)
    print(f"  cached:   {cached[0]:.1f} s wall, {cached[1]:.1f} s CPU ({cache.bytes / 2 ** 20:.0f} MB kept)", flush=True)
    if plain[2] != cached[2]:
        raise SystemExit("error: the cached evaluation's hypotheses or losses differ from the uncached ones")
    k = 1 if cpu else 0
    wers = ", ".join(f"{100 * w:.1f}" for _, _, w in plain[2][:len(sets)])
    n = sum(len(u) for u in sets.values())
    return [Result(f"evaluation of {intervals} intervals (demo_decoder_only: {n} utterances of domain, heldout and dev "
                   f"sets, cpu): uncached / cached encoder states", cached[k], plain[k], plain[k] / cached[k],
                   ">= 1.3",
                   note=f"{'CPU' if cpu else 'wall'} s of all intervals; wall-time ratio {plain[0] / cached[0]:.3f}; "
                        f"hypotheses and losses identical; {cache.hits} batches decoded "
                        f"from the cache, {cache.misses} encoded; {cache.bytes / 2 ** 20:.0f} MB kept; WER at the first interval "
                        f"{wers}% (domain, heldout, dev)")]


def main(argv=None) -> list[Result]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, help="(default: as many as demo_decoder_only evaluates)")
    parser.add_argument("--limit", type=int, help="the first N utterances of each set (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure(intervals=args.intervals, limit=args.limit)
    for r in results:
        print(r.line())
    return results


if __name__ == "__main__":
    main()
