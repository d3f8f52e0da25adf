"""Target resolution on the streaming-tiny architecture (meta device) and on tiny_random with PEFT."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSpeechSeq2Seq, MoonshineStreamingConfig

from orchestrator import adapter, modeling
from orchestrator.errors import TargetError
from orchestrator.schema import AdapterConf, ModelConf, TargetsConf
from orchestrator.spec import compose
from orchestrator.targets import resolve

from conftest import cli


@pytest.fixture(scope="module")
def streaming_tiny():
    """The streaming-tiny architecture (6+6 layers, 320 wide, 8 heads, vocab 32768), weights on meta."""
    config = MoonshineStreamingConfig(num_key_value_heads=8, decoder_start_token_id=1)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (320, 6, 32768)
    with torch.device("meta"):
        return AutoModelForSpeechSeq2Seq.from_config(config)


def preset(name: str) -> TargetsConf:
    from omegaconf import OmegaConf
    return OmegaConf.to_object(compose([f"targets={name}"]).targets)


def counts(resolution) -> dict[str, int]:
    return {c: len(mods) for c, mods in resolution.by_component().items()}


def test_global_qkvo_is_72_linear(streaming_tiny):
    r = resolve(streaming_tiny, preset("global_qkvo"))
    assert counts(r) == {"encoder": 24, "decoder": 48}
    assert sum(".self_attn." in n for n in r.names) == 48 and sum(".encoder_attn." in n for n in r.names) == 24
    assert {m.type_name for m in r.modules} == {"Linear"}
    assert r.summary() == "enc+dec attn q,k,v,o (72)"


def test_decoder_attention_and_mlp(streaming_tiny):
    r = resolve(streaming_tiny, preset("decoder_attn_mlp"))
    assert counts(r) == {"decoder": 60}
    assert {n.split(".")[4] for n in r.names} == {"self_attn", "encoder_attn", "mlp"}


def test_all_linear_has_frontend_linear_and_no_head(streaming_tiny):
    r = resolve(streaming_tiny, preset("all_linear"))
    assert "model.encoder.embedder.linear" in r.names and "proj_out" not in r.names
    assert counts(r) == {"frontend": 1, "encoder": 36, "decoder": 60}
    assert r.empty_components == ("adapter",)  # decoder.proj is Identity on tiny: reported, not silent


def test_proj_on_tiny_is_refused_with_our_message(streaming_tiny):
    with pytest.raises(TargetError) as err:
        resolve(streaming_tiny, TargetsConf(patterns=[r"model\.decoder\.proj"]))
    assert "model.decoder.proj is Identity" in str(err.value) and "on_unsupported=skip" in str(err.value)


def test_bridge_preset_skips_identity_and_records_it(streaming_tiny):
    r = resolve(streaming_tiny, preset("bridge"))
    assert "model.decoder.pos_emb" in r.names
    assert [m.name for m in r.skipped] == ["model.decoder.proj"]


def test_typo_in_pattern_names_entry_and_suggestions(streaming_tiny):
    with pytest.raises(TargetError) as err:
        resolve(streaming_tiny, TargetsConf(patterns=[r"model\.decoder\.layers\.0\.self_atn\.q_proj"]))
    assert "self_atn" in str(err.value) and "model.decoder.layers.0.self_attn.q_proj" in str(err.value)


def test_unknown_kind_suggests_the_known_one(streaming_tiny):
    with pytest.raises(TargetError) as err:
        resolve(streaming_tiny, TargetsConf(components=["decoder"], kinds=["q_prj"]))
    assert "q_proj" in err.value.fix


def test_kind_matching_nothing_in_the_components_fails(streaming_tiny):
    with pytest.raises(TargetError) as err:
        resolve(streaming_tiny, TargetsConf(components=["encoder"], kinds=["cross_attn"]))
    assert "'cross_attn' matches no module" in str(err.value)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_peft_adapts_exactly_the_resolved_modules(tiny_checkpoint, kind, tmp_path):
    model, _ = modeling.load(ModelConf(name="t", id=str(tiny_checkpoint)), torch.device("cpu"))
    r = resolve(model, preset("decoder_attn_mlp"))
    peft_model = adapter.attach(model, AdapterConf(kind=kind), r)
    assert sorted(adapter.adapted_modules(peft_model)) == sorted(r.names)
    peft_model.save_pretrained(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["use_dora"] == (kind == "dora")
    fresh, _ = modeling.load(ModelConf(name="t", id=str(tiny_checkpoint)), torch.device("cpu"))
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "a")  # PEFT stores a compressed name list
    assert sorted(adapter.adapted_modules(reloaded)) == sorted(r.names)


def test_plan_json_on_the_seed_experiments():
    for exp, total, comps in [("exp_2_5_v2_universal_lora", 72, {"encoder": 24, "decoder": 48}),
                              ("exp_2_4_v2_true_bridge", 60, {"decoder": 60}),
                              ("exp_2_3_v2_bridge_focus", 97, {"frontend": 1, "encoder": 36, "decoder": 60})]:
        plan = json.loads(cli("plan", f"+exp={exp}", "--json", check=True).stdout)
        assert plan["targets"]["total"] == total
        assert {c: len(g["modules"]) for c, g in plan["targets"]["by_component"].items()} == comps
        assert plan["trainable_params"] == sum(g["params"] for g in plan["targets"]["by_component"].values()) > 0
        assert plan["schedule"]["warmup_steps"] == 100


def test_plan_with_a_proj_spec_fails_in_one_line():
    proc = cli("plan", "+exp=exp_2_5_v2_universal_lora", "targets.patterns=[model\\.decoder\\.proj]", "targets.kinds=[]")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "model.decoder.proj is Identity" in proc.stderr
