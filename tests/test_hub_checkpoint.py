"""The hub-shaped UsefulSensors/moonshine-streaming-tiny (training/hub_checkpoint.py): transformers'
own config, the very architecture `plan` reads offline for the hub id, a byte-fallback BPE of the
real vocabulary size, a folder plain transformers loads; and (slow) the seed experiments run on it
end to end through the CLI, resolving the targets `plan` counts for the hub model."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig

from conftest import ROOT, cli
from orchestrator.config.schema import ModelConf
from orchestrator.config.spec import spec_from_overrides
from orchestrator.registry import Store
from orchestrator.training import hub_checkpoint, modeling

SEEDS = ("exp_2_3_v2_bridge_focus", "exp_2_4_v2_true_bridge", "exp_2_5_v2_universal_lora")
HUB_FILES = ["config.json", "generation_config.json", "model.safetensors", "processor_config.json",
             "tokenizer.json", "tokenizer_config.json"]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_builders_config_is_the_architecture_plan_reads_for_the_hub_id():
    """The file is what save_pretrained writes for the builder's config (but the version stamp), and
    transformers reads the same full config back from either."""
    file = modeling.ARCHITECTURES / f"{hub_checkpoint.ARCHITECTURE}.json"
    config = hub_checkpoint.streaming_tiny_config()
    shipped, built = json.loads(file.read_text()), json.loads(config.to_json_string())
    for d in (shipped, built):
        d.pop("transformers_version")
    assert built == shipped, f"regenerate {file.name} from hub_checkpoint.streaming_tiny_config().to_json_string()"
    assert AutoConfig.from_pretrained(file).to_dict() == config.to_dict() | {"_name_or_path": str(file)}
    hub = OmegaConf.load(ROOT / "conf" / "model" / "moonshine_streaming_tiny.yaml")
    local = OmegaConf.load(ROOT / "conf" / "model" / "moonshine_streaming_tiny_local.yaml")
    assert (hub.id, hub.architecture) == (hub_checkpoint.HUB_ID, hub_checkpoint.ARCHITECTURE)
    assert (local.build, local.architecture) == ("moonshine_streaming_tiny", hub_checkpoint.ARCHITECTURE)
    assert local.build in modeling.BUILDERS
    # transformers' defaults are the streaming-tiny checkpoint; only the two open values are ours
    assert (built["hidden_size"], built["num_hidden_layers"], built["vocab_size"]) == (320, 6, 32768)
    assert (built["num_key_value_heads"], built["decoder_start_token_id"]) == (8, built["bos_token_id"])


def test_the_tokenizer_is_a_byte_fallback_bpe_of_exactly_the_vocabulary_size():
    config = hub_checkpoint.streaming_tiny_config()
    tok = hub_checkpoint.subword_tokenizer(config.vocab_size)
    assert len(tok) == config.vocab_size == 32768
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (
        config.pad_token_id, config.decoder_start_token_id, config.eos_token_id)
    vocab = tok.get_vocab()
    assert [vocab[p] for p in ("<0x00>", "<0xFF>")] == [4, 259]
    reserved = sorted(i for p, i in vocab.items() if p.startswith("<reserved_"))
    learned = reserved[0] - 260
    assert reserved == list(range(reserved[0], 32768)) and 300 < learned < 2000  # ~300 words, their pieces

    corpus = hub_checkpoint.corpus()
    assert len(tok("cleared to land runway two seven left").input_ids) == 7  # whole words, no BOS/EOS added
    encoded = tok(corpus, add_special_tokens=False).input_ids
    assert max(max(ids) for ids in encoded) < reserved[0] and min(min(ids) for ids in encoded) > 259
    assert tok.batch_decode(encoded[:200]) == corpus[:200]
    text = "Mr. Quilter's café, 20°C ☃"  # cased, and bytes for what no piece spells
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text and any(4 <= i <= 259 for i in ids) and tok.unk_token_id not in ids


NO_PROJECT_CODE = textwrap.dedent("""\
    import json, sys
    import numpy as np, torch, transformers
    folder = sys.argv[1]
    model = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(folder)
    processor = transformers.AutoProcessor.from_pretrained(folder)
    audio = [np.random.default_rng(0).normal(0, 0.1, n).astype(np.float32) for n in (16001, 12345)]
    inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3)
    g = model.generation_config
    print(json.dumps({
        "model": type(model).__name__, "processor": type(processor).__name__,
        "fast_tokenizer": isinstance(processor.tokenizer, transformers.PreTrainedTokenizerFast),
        "extractor": type(processor.feature_extractor).__name__,
        "vocab_size": model.config.vocab_size, "len_tokenizer": len(processor.tokenizer),
        "params": sum(p.numel() for p in model.parameters()),
        "input_shape": list(inputs["input_values"].shape), "mask_sums": inputs["attention_mask"].sum(-1).tolist(),
        "generated": list(out.shape),
        "generation": [g.decoder_start_token_id, g.bos_token_id, g.eos_token_id, g.pad_token_id],
        "project_modules": sorted(m for m in sys.modules if m.split(".")[0] == "orchestrator")}))
    """)


def test_the_folder_loads_with_plain_transformers_and_through_the_project(streaming_tiny_checkpoint, tmp_path):
    folder = streaming_tiny_checkpoint
    assert sorted(p.name for p in folder.iterdir()) == HUB_FILES
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", NO_PROJECT_CODE, str(folder)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {
        "model": "MoonshineStreamingForConditionalGeneration", "processor": "MoonshineStreamingProcessor",
        "fast_tokenizer": True, "extractor": "Wav2Vec2FeatureExtractor", "vocab_size": 32768, "len_tokenizer": 32768,
        "params": 44_054_721, "input_shape": [2, 16080], "mask_sums": [16001, 12345], "generated": [2, 4],
        "generation": [1, 1, 2, 0], "project_modules": []}  # audio padded to a multiple of 80 samples

    net, processor = modeling.load(ModelConf(name="local", id=str(folder)), torch.device("cpu"))  # as a hub id is
    assert net.config.vocab_size == len(processor.tokenizer) == 32768

    spec = spec_from_overrides(["model=moonshine_streaming_tiny_local", f"model.id={tmp_path / 'built'}"])
    modeling.ensure_built(spec.model)  # the preset's recipe, on first use: the same bytes again
    assert digests(tmp_path / "built") == digests(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["built"]  # built beside, renamed into place


def test_build_checkpoint_refuses_a_folder_that_holds_something(tmp_path):
    (tmp_path / "mine.txt").write_text("not a checkpoint")
    proc = cli("build-checkpoint", "moonshine_streaming_tiny", str(tmp_path))
    assert proc.returncode == 2 and "exists and is not an empty folder" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


# --- slow: the seed experiments, end to end on the full-size model ---

def plan(*overrides: str) -> dict:
    proc = cli("plan", *overrides, "--json", check=True)
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_build_checkpoint_writes_the_recipes_bytes(streaming_tiny_checkpoint, tmp_path):
    out = tmp_path / "moonshine-streaming-tiny"
    proc = cli("build-checkpoint", "moonshine_streaming_tiny", str(out), "--json", check=True)
    info = json.loads(proc.stdout)
    assert (info["parameters"], info["vocab_size"], info["files"]) == (44_054_721, 32768, HUB_FILES)
    assert digests(out) == digests(streaming_tiny_checkpoint)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEEDS)
def test_a_seed_experiment_runs_on_the_hub_shaped_checkpoint(name, streaming_tiny_checkpoint, speech, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # `plan` on the hub id reads the shipped architecture
    folder = str(streaming_tiny_checkpoint)
    hub, local = plan(f"+exp={name}"), plan(f"+exp={name}", f"model.id={folder}")
    assert hub["model"]["id"] == hub_checkpoint.HUB_ID and local["model"]["id"] == folder
    for key in ("targets", "trainable_params"):
        assert local[key] == hub[key], key
    assert local["model"]["params"] == hub["model"]["params"] == 44_054_721

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    cli(f"+exp={name}", f"model.id={folder}", f"data.train_manifest={speech['train']}",
        f"eval.domain_manifest={speech['domain']}", f"eval.heldout_manifest={speech['heldout']}",
        f"registry.url={url}", f"output_dir={tmp_path / 'outputs'}", "device=cpu",
        "optim.steps=2", "eval.interval=1", "optim.batch_size=2", check=True)
    store = Store(url)
    (run,) = store.list_runs()
    store.close()
    assert run.status == "completed" and run.model_id == folder, run.failure_reason
    assert [i.step for i in run.intervals] == [0, 1, 2]
    assert len(run.targets) == hub["targets"]["total"] > 0
    planned = {m for g in hub["targets"]["by_component"].values() for m in g["modules"]}
    assert set(run.targets) == planned and run.target_summary == hub["targets"]["summary"]
