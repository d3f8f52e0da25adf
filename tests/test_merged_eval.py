"""Evaluation computes each LoRA or DoRA Linear as one matmul with the merged weight: the same
hypotheses as the adapter's two-path forward, and the base weights come back as the very same
objects (nothing drifts between intervals, unlike merge + unmerge)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from orchestrator.config.schema import AdapterConf, DataConf, ModelConf, TargetsConf
from orchestrator.data.batching import AudioBank
from orchestrator.data.manifest import read_manifest
from orchestrator.training import adapter, evaluate as evaluation, modeling, targets

DEMO_BASE = Path(__file__).resolve().parent.parent / "demo" / "base"
DECODER = TargetsConf(components=["decoder"], kinds=["self_attn", "cross_attn", "mlp"])


def _trained(kind: str = "lora"):
    model, processor = modeling.load(ModelConf(name="t", id=str(DEMO_BASE)), torch.device("cpu"))
    model = adapter.attach(model, AdapterConf(kind=kind), targets.resolve(model, DECODER))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # what training does to an adapter: B leaves zero
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=generator))
    return model, processor


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_merged_decoding_says_what_the_adapter_says_and_puts_every_weight_back(speech, monkeypatch, kind):
    model, processor = _trained(kind)
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    utts = read_manifest(speech["domain"]) + read_manifest(speech["heldout"])
    kw = dict(batch_size=4, tokens_per_second=20.0, device=torch.device("cpu"), progress=False)
    merged = evaluation.evaluate(model, processor, AudioBank(DataConf()), utts, **kw)
    for name, p in model.named_parameters():  # the same Parameter objects, the same values
        assert p is before[name][0] and torch.equal(p, before[name][1]), name
    monkeypatch.setattr(evaluation, "merged_lora", lambda m: contextlib.nullcontext(0))
    plain = evaluation.evaluate(model, processor, AudioBank(DataConf()), utts, **kw)
    assert [u.hypothesis for u in merged.utterances] == [u.hypothesis for u in plain.utterances]
    assert merged.loss == pytest.approx(plain.loss, rel=1e-5)
    assert len({u.hypothesis for u in merged.utterances}) > len(utts) // 2  # real, varied text


def test_what_is_merged_and_what_is_not():
    model, _ = _trained()
    lora_layers = len(adapter.adapted_modules(model))
    with evaluation.merged_lora(model) as merged:
        assert merged == lora_layers == 30
        assert all(m.merged for m in model.modules() if hasattr(m, "merged_adapters") and m.merged_adapters)
    assert not any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merged_adapters"))
    dora, _ = _trained("dora")
    with evaluation.merged_lora(dora) as merged:
        assert merged == lora_layers  # DoRA too: its magnitude folded into the merged weight
    assert not any(k.endswith("weight_norm") for m in dora.modules() for k in getattr(m, "_caches", {}))
    with pytest.raises(RuntimeError), evaluation.merged_lora(model):
        raise RuntimeError("an evaluation that fails half-way")
    assert not any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merged_adapters"))
