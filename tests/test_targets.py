"""Target resolution on the streaming-tiny architecture (meta device) and on tiny_random with PEFT."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSpeechSeq2Seq, MoonshineStreamingConfig

from orchestrator.training import adapter, modeling
from orchestrator.errors import TargetError
from orchestrator.config.schema import AdapterConf, ModelConf, TargetsConf
from orchestrator.config.spec import compose
from orchestrator.training.targets import resolve

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


# --- what PEFT can wrap, for LoRA and for DoRA ---------------------------------------------------

from torch import nn  # noqa: E402

from orchestrator.training.targets import DORA_SUPPORTED, SUPPORTED, Resolution, TargetModule  # noqa: E402


def test_causal_conv_with_its_own_forward_is_refused_or_skipped(streaming_tiny):
    spec = TargetsConf(components=["frontend"], kinds=["all"])
    with pytest.raises(TargetError) as err:
        resolve(streaming_tiny, spec)
    assert "model.encoder.embedder.conv1 is MoonshineStreamingCausalConv1d, a Conv1d with its own forward" in str(err.value)
    r = resolve(streaming_tiny, TargetsConf(components=["frontend"], kinds=["all"], on_unsupported="skip"))
    assert r.names == ["model.encoder.embedder.linear"]
    assert [m.name for m in r.skipped] == ["model.encoder.embedder.conv1", "model.encoder.embedder.conv2"]


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.lin = nn.Embedding(10, 8), nn.Linear(8, 8)
        self.c1, self.c2, self.c3 = nn.Conv1d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv3d(8, 8, 3, padding=1)
        self.grouped = nn.Conv1d(8, 8, 3, padding=1, groups=4)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, ids):
        x = self.lin(self.emb(ids))
        y = self.c1(x.transpose(1, 2)) + self.grouped(x.transpose(1, 2))
        z = self.c2(y[..., None].expand(-1, -1, -1, 2)).mean(-1)
        w = self.c3(z[..., None, None].expand(-1, -1, -1, 2, 2)).mean((-1, -2))
        return w.sum() + self.mha(x, x, x)[0].sum()


def _resolution(*names: str) -> Resolution:
    toy = _Toy()
    return Resolution(TargetsConf(patterns=list(names)),
                      tuple(TargetModule(n, "other", type(toy.get_submodule(n)).__name__, 0) for n in names))


@pytest.mark.parametrize("name", ["emb", "lin", "c1", "c2", "c3"])
def test_dora_table_matches_the_installed_peft(name):
    """Every type in DORA_SUPPORTED really gets a DoRA layer that trains (LoraConfig's docstring,
    "DoRA only supports linear and Conv2D", is out of date)."""
    toy = _Toy()
    assert isinstance(toy.get_submodule(name), DORA_SUPPORTED) and isinstance(toy.get_submodule(name), SUPPORTED)
    peft_model = adapter.attach(toy, AdapterConf(kind="dora", r=4, dropout=0.1), _resolution(name))
    assert adapter.adapted_modules(peft_model) == [name]
    peft_model(torch.randint(0, 10, (2, 5))).backward()
    magnitude = [p for n, p in peft_model.named_parameters() if "lora_magnitude_vector" in n]
    assert magnitude and all(p.grad is not None for p in magnitude)


def test_a_type_peft_dora_refuses_is_refused_by_us_first():
    from peft import LoraConfig, get_peft_model

    with pytest.raises(ValueError, match="does not support DoRA"):  # PEFT's own refusal, late and generic
        get_peft_model(_Toy(), LoraConfig(target_modules=["mha"], use_dora=True))
    assert not isinstance(_Toy().mha, DORA_SUPPORTED)
    with pytest.raises(TargetError) as err:
        adapter.attach(_Toy(), AdapterConf(kind="dora"), _resolution("lin", "mha"))
    assert "adapter=dora cannot adapt mha: it is MultiheadAttention" in str(err.value) and "adapter=lora" in err.value.fix


def test_peft_refusals_become_one_target_error():
    with pytest.raises(TargetError) as err:  # rank 3 on a conv with 4 groups
        adapter.attach(_Toy(), AdapterConf(kind="lora", r=3), _resolution("grouped"))
    assert "PEFT refused to put a lora adapter" in str(err.value) and "groups=4" in str(err.value)
