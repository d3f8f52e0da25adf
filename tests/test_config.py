"""Composition and validation of conf/: every experiment composes, bad config fails by key."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from orchestrator.errors import ConfigError
from orchestrator.config.paths import declared_experiments
from orchestrator.config.spec import build_spec, compose, spec_from_overrides

SEEDS = {  # experiment -> (model, adapter kind, target preset, lr, steps)
    "exp_2_3_v2_bridge_focus": ("moonshine_streaming_tiny", "lora", "all_linear", 1e-5, 1000),
    "exp_2_4_v2_true_bridge": ("moonshine_streaming_tiny", "dora", "decoder_attn_mlp", 1e-5, 1000),
    "exp_2_5_v2_universal_lora": ("moonshine_streaming_tiny", "lora", "global_qkvo", 1e-5, 1000),
    "exp_2_1_dora_stability": ("moonshine_streaming_tiny", "dora", "global_qkvo", 1e-4, 1000),
    "exp_2_2_qv_only": ("moonshine_streaming_tiny", "lora", "qv_only", 1e-5, 1000),
}


@pytest.mark.parametrize("name", declared_experiments())
def test_every_experiment_composes_into_a_valid_spec(name):
    spec = spec_from_overrides([f"+exp={name}"])
    assert spec.experiment == name
    warmup = 0.0333 if name == "upstream_lora_recipe" else 0.1  # upstream: 100 warmup steps of 3000
    assert spec.optim.warmup_ratio == warmup and spec.data.rms_target == 0.075 and spec.data.max_seconds == 20
    assert spec.eval_steps[0] == 0 and spec.eval_steps[-1] == spec.optim.steps
    assert len(spec.config_hash) == 64


@pytest.mark.parametrize("name,expected", sorted(SEEDS.items()))
def test_seed_experiments_declare_what_the_seeds_ran(name, expected):
    spec = spec_from_overrides([f"+exp={name}"])
    assert (spec.model.name, spec.adapter.kind, spec.targets.name, spec.optim.lr, spec.optim.steps) == expected
    assert spec.model.id == "UsefulSensors/moonshine-streaming-tiny"


def test_lr_sweep_base_and_seed_manifest_defaults():
    spec = spec_from_overrides(["+exp=exp_3_1_lr_sweep", "optim.lr=5e-5"])
    assert spec.optim.lr == 5e-5
    assert spec.data.train_manifest == "data/train_manifest_expanded.jsonl"
    assert spec.eval.domain_manifest == "data/domain_manifest.jsonl"
    assert spec.eval.heldout_manifest == "data/heldout_manifest.jsonl"


def test_overrides_change_the_identity_hash_but_registry_url_does_not():
    base = spec_from_overrides(["+exp=exp_2_5_v2_universal_lora"])
    assert spec_from_overrides(["+exp=exp_2_5_v2_universal_lora", "optim.lr=1e-4"]).config_hash != base.config_hash
    assert spec_from_overrides(["+exp=exp_2_5_v2_universal_lora", "registry.url=sqlite:///x.db"]).config_hash == base.config_hash


def test_typo_in_override_fails_with_the_key_name():
    with pytest.raises(ConfigCompositionException) as err:
        compose(["optim.lrr=1e-4"])
    assert "lrr" in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("override,key", [
    ("optim.lr=0", "optim.lr"), ("optim.lr=-1e-4", "optim.lr"), ("optim.warmup_ratio=1.5", "optim.warmup_ratio"),
    ("eval.interval=5000", "eval.interval"), ("optim.steps=0", "optim.steps"),
    ("data.replay_fraction=0.5", "data.replay_manifest"),  # a fraction without a manifest
    ("data.replay_fraction=1.5", "data.replay_fraction"),
])
def test_invalid_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        build_spec(compose(["+exp=exp_2_5_v2_universal_lora", override]))
    assert err.value.where == key and err.value.fix


@pytest.mark.parametrize("override,allowed", [
    ("adapter.kind=ia3", "lora, dora"), ("targets.on_unsupported=ignore", "refuse, skip"),
    ("data.on_silent=drop", "skip, refuse"), ("device=tpu", "auto, cpu, cuda"),
    ("data.speaker_overlap=sometimes", "warn, refuse"),
])
def test_a_value_outside_a_closed_set_is_refused_while_composing(override, allowed):
    """Enum-typed schema fields: OmegaConf refuses the value; config_error names key and choices."""
    from orchestrator.config.compose import config_error

    with pytest.raises(ConfigCompositionException) as err:
        compose(["+exp=exp_2_5_v2_universal_lora", override])
    error = config_error(err.value)
    key = override.split("=")[0]
    assert error.where == key and error.fix.startswith(f"set {key} to one of {allowed};"), error.one_line()


def test_closed_set_values_stay_plain_words_in_the_saved_config():
    spec = spec_from_overrides(["+exp=exp_2_4_v2_true_bridge"])
    assert spec.adapter.kind == "dora" and f"{spec.adapter.kind}" == "dora"
    assert spec.config["adapter"]["kind"] == "dora" and type(spec.config["adapter"]["kind"]) is str
    assert type(spec.config["device"]) is str and type(spec.config["data"]["on_silent"]) is str


def test_help_and_cfg_need_no_data(tmp_path):
    """`--help` and `--cfg job` print without validating manifests that do not exist yet."""
    from conftest import cli

    proc = cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Configuration groups" in proc.stdout
    assert "export-mlflow" in proc.stdout and "tune" in proc.stdout  # the subcommands are listed first
    proc = cli(cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: nothing to do (fix: orchestrator +exp=NAME")
    proc = cli("+exp=demo_dora", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and "demo_base" in proc.stdout
    proc = cli("-m", "+exp=demo_dora", "optim.lr=1e-4,2e-4", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: -m --cfg: ") and "fix: drop -m" in proc.stderr


def test_a_replay_share_that_rounds_to_nothing_fails_before_any_run():
    with pytest.raises(ConfigError) as err:
        build_spec(compose(["+exp=demo_atc", "data.replay_fraction=0.01"]))
    assert err.value.where == "data.replay_fraction" and "0 of 16" in err.value.what
