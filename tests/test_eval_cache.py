"""The evaluation encoder cache: with a frozen encoder, each evaluation batch is encoded once per run
and decoded from at every interval, with hypotheses and losses identical to encoding it every time."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.config.schema import AdapterConf, DataConf, ModelConf, TargetsConf
from orchestrator.data.batching import AudioBank
from orchestrator.data.manifest import read_manifest
from orchestrator.registry import Store
from orchestrator.training import adapter, eval_cache, loop as train, modeling, targets
from orchestrator.training.evaluate import evaluate

DECODER_SELF_ATTN = TargetsConf(components=["decoder"], kinds=["self_attn"])
DEMO_BASE = Path(__file__).resolve().parent.parent / "demo" / "base"  # pretrained: it says real words


def _model(checkpoint, target: TargetsConf):
    model, processor = modeling.load(ModelConf(name="t", id=str(checkpoint)), torch.device("cpu"))
    torch.manual_seed(0)
    return adapter.attach(model, AdapterConf(), targets.resolve(model, target)), processor


def _perturb(model, seed: int) -> None:
    """What a few training steps do to the adapter: every LoRA weight moves (B starts at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])  # bf16: -m slow (23 s)
def test_cached_evaluations_are_the_uncached_ones_at_every_interval(speech, precision):
    model, processor = _model(DEMO_BASE, DECODER_SELF_ATTN)
    utts = read_manifest(speech["domain"]) + read_manifest(speech["heldout"])
    bank = AudioBank(DataConf())
    cache = eval_cache.for_run(model, "auto", 64)
    assert cache is not None
    kw = dict(batch_size=3, tokens_per_second=20.0, device=torch.device("cpu"), progress=False, precision=precision)
    for interval in range(2):
        for with_loss in (True, False):
            plain = evaluate(model, processor, bank, utts, with_loss=with_loss, **kw)
            cached = evaluate(model, processor, bank, utts, with_loss=with_loss, encoder_cache=cache, **kw)
            assert [u.hypothesis for u in cached.utterances] == [u.hypothesis for u in plain.utterances]
            assert cached.wer == plain.wer
            assert cached.loss == plain.loss or (not with_loss and cached.loss != cached.loss)  # nan without loss
        _perturb(model, interval)  # the decoder changes between intervals; the encoder cannot
    batches = -(-len(utts) // 3)
    assert cache.misses == batches and cache.hits == 2 * 2 * batches - batches  # encoded once, then reused
    assert len({u.hypothesis for u in plain.utterances}) > len(utts) // 2  # real, varied text: it can fail


def test_an_adapter_on_the_encoder_or_off_means_no_cache(tiny_checkpoint):
    encoder_side, _ = _model(tiny_checkpoint, TargetsConf(components=["encoder"], kinds=["q_proj"]))
    assert "adapter wraps encoder." in eval_cache.encoder_frozen(encoder_side)
    assert eval_cache.for_run(encoder_side, "auto", 64) is None
    decoder_side, _ = _model(tiny_checkpoint, DECODER_SELF_ATTN)
    assert eval_cache.encoder_frozen(decoder_side) is None
    assert eval_cache.for_run(decoder_side, "off", 64) is None
    next(p for n, p in decoder_side.named_parameters() if ".encoder." in n).requires_grad_(True)
    assert "is trainable" in eval_cache.encoder_frozen(decoder_side)


def test_the_budget_bounds_what_is_kept(tiny_checkpoint, speech):
    model, processor = _model(tiny_checkpoint, DECODER_SELF_ATTN)
    utts = read_manifest(speech["domain"])
    cache = eval_cache.EvalEncoderCache(max_mb=0.0)
    kw = dict(batch_size=4, tokens_per_second=20.0, device=torch.device("cpu"), progress=False)
    first = evaluate(model, processor, AudioBank(DataConf()), utts, encoder_cache=cache, **kw)
    again = evaluate(model, processor, AudioBank(DataConf()), utts, encoder_cache=cache, **kw)
    assert cache.bytes == 0 and cache.hits == 0 and first.utterances == again.utterances


def test_a_decoder_only_run_records_the_same_intervals_with_and_without_the_cache(make_spec, tmp_path):
    def run(setting: str):
        store = Store(f"sqlite:///{tmp_path / (setting + '.db')}")
        spec = make_spec("targets=decoder_self_qkv", f"eval.cache_encoder={setting}",
                         f"registry.url={store.url}", f"output_dir={tmp_path / setting}")
        run = store.get_run(train.run(spec, store, progress=False))
        hyps = [u.hypothesis for i in run.intervals for split in ("domain", "heldout")
                for u in store.utterances(run.id, i.step, split)]
        store.close()
        assert run.status == "completed" and run.check("parity").passed
        return [(i.step, i.domain_wer, i.heldout_wer, i.eval_loss, i.train_loss) for i in run.intervals], hyps

    assert run("auto") == run("off")
