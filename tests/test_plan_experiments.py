"""Every declared experiment (conf/exp/*.yaml) plans: composed, validated, its optimizer and
scheduler importable, and its targets resolved against the model it names, built from the config
shipped in training/architectures/ (or the committed demo model) on the meta device: offline."""
from __future__ import annotations

import pytest

from conftest import ROOT
from orchestrator.config.paths import declared_experiments
from orchestrator.config.spec import spec_from_overrides


@pytest.mark.parametrize("name", declared_experiments())
def test_every_experiment_plans_against_its_model(name, tiny_checkpoint, monkeypatch):
    from orchestrator.training.plan import make_plan

    monkeypatch.chdir(ROOT)  # demo/base, like every relative model.id, is relative to the checkout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [f"+exp={name}"]
    built = spec_from_overrides(overrides).model.build
    if built:  # a model the project builds: the session's tiny checkpoint, not one under ROOT
        assert built == "tiny_random"
        overrides.append(f"model.id={tiny_checkpoint}")
    plan = make_plan(overrides)
    targets = plan["targets"]
    assert plan["experiment"] == name and targets["total"] > 0 and plan["trainable_params"] > 0
    assert targets["total"] == sum(g["count"] for g in targets["by_component"].values())
    assert all(g["params"] > 0 for g in targets["by_component"].values())
    assert plan["optim"]["optimizer"] == "torch.optim.AdamW"
    assert plan["schedule"]["scheduler"] == "transformers.get_linear_schedule_with_warmup"
