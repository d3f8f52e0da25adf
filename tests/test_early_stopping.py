"""optim.early_stopping: the rule, its config, and real tiny_random runs that stop or run to the end."""
from __future__ import annotations

import math

import pytest

from orchestrator.config.schema import EarlyStoppingConf
from orchestrator.config.spec import spec_from_overrides
from orchestrator.errors import ConfigError
from orchestrator.registry import Store
from orchestrator.training import loop as train
from orchestrator.training.early_stopping import EarlyStopping, decide, scan


def conf(**kw) -> EarlyStoppingConf:
    return EarlyStoppingConf(**{"enabled": True, **kw})


def test_the_rule_counts_evaluations_since_the_best_improvement_by_more_than_min_delta():
    history = [(0, 2.0), (100, 1.5), (200, 1.49), (300, 1.6), (400, 1.495)]
    assert scan(history, 0.0) == (200, 1.49, 2)
    assert scan(history, 0.02) == (100, 1.5, 3)  # 1.49 is not better by more than 0.02
    assert decide(history, conf(patience=3)) is None
    assert decide(history, conf(patience=3, min_delta=0.02)) == (
        "early stopping: dev loss (domain + heldout eval loss) did not improve by more than 0.02 for 3 evaluations "
        "(best 1.5000 at step 100)")
    assert decide([(0, 0.5), (10, 0.4), (20, 0.45)], conf(metric="select_wer", patience=1)) == (
        "early stopping: selection WER did not improve by more than 0 for 1 evaluations (best 40.00% at step 10)")
    assert decide([(0, 1.0)], conf(patience=1)) is None  # the baseline alone never stops a run
    assert scan([(0, math.nan), (10, 3.0), (20, math.nan)], 0.0) == (10, 3.0, 1)  # NaN improves on nothing


def test_the_rule_resumes_from_its_recorded_history_up_to_the_checkpoint():
    rule = EarlyStopping(conf(patience=2))
    for step, value in [(0, 1.0), (10, 0.9), (20, 0.95)]:
        assert rule.update(step, value) is None
    details = rule.details(None)
    assert details["history"] == [{"step": 0, "value": 1.0}, {"step": 10, "value": 0.9}, {"step": 20, "value": 0.95}]
    resumed = EarlyStopping.resumed(conf(patience=2), details, upto=10)  # the checkpoint was at step 10
    assert resumed.history == [(0, 1.0), (10, 0.9)]
    assert resumed.update(20, 0.95) is None and resumed.update(30, 0.91) is not None
    assert rule.update(20, 0.85) is None  # a re-evaluated step replaces its value


@pytest.mark.parametrize("override,key", [
    ("optim.early_stopping.metric=wer", "optim.early_stopping.metric"),
    ("optim.early_stopping.patience=0", "optim.early_stopping.patience"),
    ("optim.early_stopping.min_delta=-1", "optim.early_stopping.min_delta"),
    ("optim.early_stopping.metric=select_wer", "optim.early_stopping.metric"),  # no eval.select_manifest
])
def test_bad_early_stopping_settings_fail_by_key(override, key):
    with pytest.raises(ConfigError) as err:
        spec_from_overrides(["+exp=smoke_tiny_random", "optim.early_stopping.enabled=true", override])
    assert err.value.where == key


def test_the_upstream_constant_schedule_holds_the_lr_after_warmup_and_a_bad_target_fails_in_plan():
    """The upstream preset's scheduler takes no total step count: it is built without one."""
    import torch

    from orchestrator.training.optim import build_optimizer, build_scheduler, check_buildable

    spec = spec_from_overrides(["+exp=smoke_tiny_random", "optim.steps=20", "optim.warmup_ratio=0.2", "optim.lr=0.1",
                                "optim.scheduler._target_=transformers.get_constant_schedule_with_warmup"])
    assert check_buildable(spec.optim)["scheduler"] == "transformers.get_constant_schedule_with_warmup"
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], spec.optim)
    scheduler = build_scheduler(optimizer, spec)
    lrs = []
    for _ in range(spec.optim.steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1]) and lrs[4:] == pytest.approx([0.1] * 16)  # step 1 > 0
    bad = spec_from_overrides(["+exp=smoke_tiny_random", "optim.scheduler._target_=transformers.get_cosine_shedule"])
    with pytest.raises(ConfigError, match="cannot import"):
        check_buildable(bad.optim)


def _run(run_overrides, *extra):
    ov = [o for o in run_overrides if not o.startswith(("optim.steps", "eval.interval"))]
    spec = spec_from_overrides([*ov, "optim.steps=8", "eval.interval=2", "optim.early_stopping.enabled=true", *extra])
    store = Store(next(o.split("=", 1)[1] for o in run_overrides if o.startswith("registry.url=")))
    return spec, store, store.get_run(train.run(spec, store, progress=False))


def test_a_run_whose_dev_loss_stops_improving_ends_completed_with_its_reason(run_overrides):
    # min_delta far above any change the dev loss can make: nothing after the baseline improves
    spec, store, run = _run(run_overrides, "optim.early_stopping.patience=2", "optim.early_stopping.min_delta=100")
    assert run.status == "completed" and [i.step for i in run.intervals] == [0, 2, 4]
    assert run.stop_reason.startswith("early stopping: dev loss (domain + heldout eval loss) did not improve by "
                                      "more than 100 for 2 evaluations (best ") and run.stop_reason.endswith("at step 0)")
    assert {a.kind: a.step for a in run.artifacts}["lora_adapter_last"] == 4
    assert run.check("parity").passed  # a completed run: its best adapter is re-checked as usual
    details = run.check("early_stopping").details
    assert [p["step"] for p in details["history"]] == [0, 2, 4] and details["stopped"]
    for point, interval in zip(details["history"], run.intervals):  # domain + heldout eval loss
        assert point["value"] > interval.eval_loss > 0
    store.close()


def test_a_run_that_keeps_improving_runs_to_the_end(run_overrides):
    spec, store, run = _run(run_overrides, "optim.early_stopping.patience=1")
    values = [p["value"] for p in run.check("early_stopping").details["history"]]
    assert values == sorted(values, reverse=True) and len(set(values)) == 5  # it improved every time
    assert run.status == "completed" and run.stop_reason is None
    assert [i.step for i in run.intervals] == [0, 2, 4, 6, 8]
    assert not run.check("early_stopping").details["stopped"]
    store.close()


def test_the_upstream_recipe_preset_trains_decoder_self_attention_qkv_at_a_constant_lr(speech, tiny_checkpoint, tmp_path):
    """+exp=upstream_lora_recipe (moonshine-voice[lora]'s defaults) on tiny_random: only the
    decoder's self-attention q/k/v get LoRA r8/alpha 8, the LR stays 1e-3 after warmup, half of
    each batch is replay, and early stopping on the dev loss is on."""
    spec = spec_from_overrides([
        "+exp=upstream_lora_recipe", "model=tiny_random", f"model.id={tiny_checkpoint}", "model.tokens_per_second=5",
        f"data.train_manifest={speech['train']}", f"data.replay_manifest={speech['train']}",
        f"eval.domain_manifest={speech['domain']}", f"eval.heldout_manifest={speech['heldout']}",
        f"registry.url=sqlite:///{tmp_path / 'registry.db'}", f"output_dir={tmp_path / 'outputs'}",
        "optim.steps=4", "eval.interval=2", "optim.batch_size=4", "eval.batch_size=8"])
    assert (spec.adapter.r, spec.adapter.alpha, spec.adapter.dropout, spec.data.replay_fraction) == (8, 8, 0.0, 0.5)
    assert spec.optim.early_stopping == EarlyStoppingConf(enabled=True, metric="dev_loss", patience=4, min_delta=1e-5)
    store = Store(spec.registry.url)
    run = store.get_run(train.run(spec, store, progress=False))
    assert run.status == "completed" and run.target_summary == "dec self-attn (6)"  # 2 decoder layers x q,k,v
    assert sorted(run.targets) == sorted(f"model.decoder.layers.{i}.self_attn.{p}_proj"
                                         for i in range(2) for p in "qkv")
    assert [i.lr for i in run.intervals[1:]] == [1e-3, 1e-3]  # constant after warmup (0 steps of 4)
    assert [p["step"] for p in run.check("early_stopping").details["history"]] == [0, 2, 4]
    store.close()
