"""The options that bring moonshine-voice[lora]'s recipe within reach (bench/upstream.py): one LoRA
A shared by q/k/v (adapter.share_a), length-sorted fixed batches (data.batching=sorted), and the
warm-up's first step at a non-zero LR (optim.schedule_shift, on by default). Real PEFT on the tiny
checkpoint, real schedulers, a real run."""
from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

from orchestrator.config.schema import AdapterConf, ModelConf
from orchestrator.config.spec import spec_from_overrides
from orchestrator.data.batching import train_batches, training_stream
from orchestrator.data.manifest import Utterance
from orchestrator.registry import Store
from orchestrator.training import adapter, checkpoint, inference, modeling
from orchestrator.training import loop as train
from orchestrator.training.optim import build_optimizer, build_scheduler
from orchestrator.training.targets import resolve

QKV = ("q_proj", "k_proj", "v_proj")


def preset(name: str):
    from omegaconf import OmegaConf

    from orchestrator.config.spec import compose

    return OmegaConf.to_object(compose([f"targets={name}"]).targets)


def _attached(tiny_checkpoint, share_a: bool, seed: int = 0):
    model, processor = modeling.load(ModelConf(name="t", id=str(tiny_checkpoint)), torch.device("cpu"))
    torch.manual_seed(seed)
    peft_model = adapter.attach(model, AdapterConf(r=4, alpha=4, dropout=0.0, share_a=share_a),
                                resolve(model, preset("decoder_self_qkv")))
    return peft_model, processor


def _attention_blocks(peft_model):
    base = peft_model.get_base_model()
    return [base.get_submodule(f"model.decoder.layers.{i}.self_attn") for i in range(len(base.model.decoder.layers))]


def test_share_a_ties_one_parameter_per_block_and_counts_it_once(tiny_checkpoint):
    separate, _ = _attached(tiny_checkpoint, share_a=False)
    shared, _ = _attached(tiny_checkpoint, share_a=True)
    for block in _attention_blocks(shared):
        a = [getattr(block, p).lora_A["default"].weight for p in QKV]
        assert a[0] is a[1] is a[2] and a[0].requires_grad
        b = [getattr(block, p).lora_B["default"].weight for p in QKV]
        assert len({id(w) for w in b}) == 3  # a B each
    for block in _attention_blocks(separate):
        assert len({id(getattr(block, p).lora_A["default"].weight) for p in QKV}) == 3
    hidden, r, blocks = 64, 4, 2  # tiny_random: 2 decoder layers of width 64; q/k/v 64 -> 64
    assert adapter.trainable_count(separate) == blocks * 3 * (r * hidden + hidden * r)
    assert adapter.trainable_count(shared) == blocks * (r * hidden + 3 * hidden * r)
    assert sum(adapter.trainable_by_component(shared).values()) == adapter.trainable_count(shared)
    params = [p for p in shared.parameters() if p.requires_grad]  # what loop.py gives the optimizer
    assert len(params) == len({id(p) for p in params}) == blocks * 4
    assert adapter.tie_shared_a(shared) == blocks  # idempotent


def test_a_shared_a_gets_the_gradient_of_all_three_projections(tiny_checkpoint, speech):
    from orchestrator.data.batching import AudioBank, model_inputs
    from orchestrator.data.manifest import read_manifest
    from orchestrator.config.schema import DataConf

    shared, processor = _attached(tiny_checkpoint, share_a=True)
    for block in _attention_blocks(shared):  # B = 0 at the start: give A a gradient to receive
        for p in QKV:
            torch.nn.init.normal_(getattr(block, p).lora_B["default"].weight, std=0.1)
    utts = read_manifest(speech["train"])[:2]
    batch = model_inputs(processor, AudioBank(DataConf()), utts, "cpu")
    shared.train()
    shared(**batch).loss.backward()
    block = _attention_blocks(shared)[0]
    grads = [getattr(block, p).lora_A["default"].weight.grad for p in QKV]
    assert grads[0] is not None and grads[0] is grads[1] is grads[2] and grads[0].abs().sum() > 0


def test_share_a_survives_save_and_load_with_identical_outputs(tiny_checkpoint, speech, tmp_path):
    from orchestrator.data.batching import AudioBank, model_inputs
    from orchestrator.data.manifest import read_manifest
    from orchestrator.config.schema import DataConf

    shared, processor = _attached(tiny_checkpoint, share_a=True)
    with torch.no_grad():  # a trained-looking adapter: non-zero B, A moved off its init
        for block in _attention_blocks(shared):
            for p in QKV:
                getattr(block, p).lora_B["default"].weight.normal_(std=0.05)
            block.q_proj.lora_A["default"].weight.mul_(1.5)
    shared.save_pretrained(tmp_path / "adapter")
    fresh, _ = modeling.load(ModelConf(name="t", id=str(tiny_checkpoint)), torch.device("cpu"))
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    adapter.tie_shared_a(reloaded)
    for block in _attention_blocks(reloaded):
        a = [getattr(block, p).lora_A["default"].weight for p in QKV]
        assert a[0] is a[1] is a[2]
    batch = model_inputs(processor, AudioBank(DataConf()), read_manifest(speech["domain"])[:3], "cpu")
    shared.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(shared(**batch).logits, reloaded(**batch).logits)
    # the checkpoint path (resume): a tied model loads its own state and stays tied
    params = [p for p in shared.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    spec = spec_from_overrides(["+exp=smoke_tiny_random", "optim.steps=10"])
    scheduler = build_scheduler(optimizer, spec)
    checkpoint.save(tmp_path, step=3, model=shared, optimizer=optimizer, scheduler=scheduler, batches_consumed=3)
    again, _ = _attached(tiny_checkpoint, share_a=True, seed=1)
    opt2 = torch.optim.AdamW([p for p in again.parameters() if p.requires_grad], lr=1e-3)
    checkpoint.load(tmp_path, model=again, optimizer=opt2, scheduler=build_scheduler(opt2, spec))
    block = _attention_blocks(again)[1]
    assert block.q_proj.lora_A["default"].weight is block.v_proj.lora_A["default"].weight
    state, mine = get_peft_model_state_dict(again), get_peft_model_state_dict(shared)
    assert state.keys() == mine.keys() and all(torch.equal(state[k], mine[k]) for k in state)


def _utts(n: int, seed: int = 0) -> list[Utterance]:
    rng = random.Random(seed)
    return [Utterance(audio_filepath=f"/a/{i}.wav", text="x", duration=round(rng.uniform(1, 10), 2), line=i + 1)
            for i in range(n)]


def test_sorted_batching_cuts_fixed_length_sorted_batches_and_shuffles_their_order_per_epoch():
    utts = _utts(45)
    stream = train_batches(utts, 8, seed=3, batching="sorted")
    epochs = [list(itertools.islice(stream, 6)) for _ in range(3)]  # ceil(45 / 8) batches an epoch
    ranked = sorted(utts, key=lambda u: (u.duration, u.line))
    fixed = [ranked[i:i + 8] for i in range(0, 45, 8)]  # the shortest first; the 5 longest are the short one
    for epoch in epochs:
        assert sorted(epoch, key=lambda b: (b[0].duration, b[0].line)) == fixed  # same batches, same members
        assert Counter(u.line for b in epoch for u in b) == Counter(u.line for u in utts)
    assert epochs[0] != epochs[1] != epochs[2]  # the order of batches is drawn again every epoch
    assert epochs == [list(itertools.islice(s, 6)) for s in [train_batches(utts, 8, 3, batching="sorted")] * 3]
    assert list(itertools.islice(train_batches(utts, 8, 4, batching="sorted"), 18)) != sum(epochs, [])
    with pytest.raises(ValueError, match="unknown batching"):
        next(train_batches(utts, 8, 3, batching="sortd"))


def test_sorted_batches_resume_exactly_with_and_without_replay():
    train_utts, replay = _utts(29), _utts(7, seed=2)
    for kw in ({}, {"replay": replay, "replay_fraction": 0.25}):
        def stream():
            return training_stream(train_utts, 4, seed=7, batching="sorted", **kw)

        whole = list(itertools.islice(stream(), 40))
        for consumed in (0, 1, 8, 9, 31):
            assert list(itertools.islice(stream(), consumed, 40)) == whole[consumed:]


def _lrs(spec, steps: int, scheduler=None, optimizer=None):
    if scheduler is None:
        optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], spec.optim)
        scheduler = build_scheduler(optimizer, spec)
    lrs = []
    for _ in range(steps):  # as steps.py: the LR a step uses is read before optimizer.step()
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs, scheduler, optimizer


@pytest.mark.parametrize("target", ["transformers.get_linear_schedule_with_warmup",
                                    "transformers.get_constant_schedule_with_warmup"])
def test_the_first_step_trains_at_a_non_zero_lr_and_no_step_at_zero(target):
    base = ["+exp=smoke_tiny_random", "optim.steps=10", "optim.warmup_ratio=0.4", "optim.lr=0.1",
            f"optim.scheduler._target_={target}"]
    shifted, _, _ = _lrs(spec_from_overrides(base), 10)
    legacy, _, _ = _lrs(spec_from_overrides([*base, "optim.schedule_shift=false"]), 10)
    assert shifted[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # moonshine-voice: lr * (step + 1) / warmup
    assert legacy[:4] == pytest.approx([0.0, 0.025, 0.05, 0.075])  # transformers' own: step 1 wasted
    assert min(shifted) > 0
    if "linear" in target:  # decay over 7 steps after the warm-up, its zero one step past the end
        assert shifted[4:] == pytest.approx([0.1 * (11 - k) / 7 for k in range(5, 11)])
    else:
        assert shifted[4:] == pytest.approx([0.1] * 6)


def test_a_shifted_schedule_resumes_exactly_from_its_state_dict():
    spec = spec_from_overrides(["+exp=smoke_tiny_random", "optim.steps=12", "optim.warmup_ratio=0.25"])
    whole, _, _ = _lrs(spec, 12)
    first, scheduler, optimizer = _lrs(spec, 5)
    opt2 = build_optimizer([torch.nn.Parameter(torch.zeros(2))], spec.optim)
    opt2.load_state_dict(optimizer.state_dict())
    resumed = build_scheduler(opt2, spec)  # built (and shifted) anew, then its saved state loaded
    resumed.load_state_dict(scheduler.state_dict())
    rest, _, _ = _lrs(spec, 7, resumed, opt2)
    assert first + rest == whole


def test_a_run_with_shared_a_and_sorted_batches_trains_and_reloads_as_it_scored(run_overrides):
    spec = spec_from_overrides([*run_overrides, "targets=decoder_self_qkv", "adapter.share_a=true",
                                "data.batching=sorted", "adapter.dropout=0.0"])
    store = Store(spec.registry.url)
    run = store.get_run(train.run(spec, store, progress=False))
    assert run.status == "completed" and [c.passed for c in run.checks] == [True]  # parity: reload scores the same
    assert spec.config_hash != spec_from_overrides([*run_overrides, "targets=decoder_self_qkv"]).config_hash
    loaded = inference.load_adapter(run.artifact("lora_adapter_last").path, device="cpu")
    block = _attention_blocks(loaded.peft_model)[0]
    assert block.q_proj.lora_A["default"].weight is block.k_proj.lora_A["default"].weight
    assert run.intervals[0].lr > 0  # the baseline records the LR of step 1: warm-up's first, not 0
    store.close()
