"""`orchestrator export RUN [--merge]`: a merged model that plain transformers loads with no peft
and that scores the adapter's WER; a plain adapter export that `orchestrator eval` reads as is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from orchestrator.config.spec import spec_from_overrides
from orchestrator.errors import OrchestratorError
from orchestrator.registry import Store
from orchestrator.training import inference, loop as train

from conftest import ROOT, cli

NO_PEFT = """
import json, sys
sys.modules["peft"] = None  # `import peft` raises ImportError from here on
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
folder, manifest = sys.argv[1:3]
model = AutoModelForSpeechSeq2Seq.from_pretrained(folder)
AutoProcessor.from_pretrained(folder)
print(json.dumps({"class": type(model).__name__, "params": [n for n, _ in model.named_parameters()]}))
from orchestrator.cli import main
main(["eval", "--adapter", folder, "--manifest", manifest, "--json", "--device", "cpu"])
"""


@pytest.fixture
def trained(run_overrides):
    spec = spec_from_overrides(run_overrides)
    store = Store(spec.registry.url)
    run = store.get_run(train.run(spec, store, progress=False))
    yield spec, store, run
    store.close()


def test_a_merged_export_loads_without_peft_and_scores_the_adapters_wer(trained, speech, tiny_checkpoint):
    spec, store, run = trained
    best = run.artifact("lora_adapter_best")
    proc = cli("export", run.id, "--merge", "--registry", spec.registry.url, "--json", check=True)
    info = json.loads(proc.stdout)
    folder = Path(info["path"])
    assert folder == Path(best.path).parent / "merged_model" and info["merged"] and info["step"] == best.step
    assert info["adapter_sha256"] == best.sha256

    merged, base = load_file(folder / "model.safetensors"), load_file(tiny_checkpoint / "model.safetensors")
    assert set(merged) == set(base)  # the base's own tensors, no lora_A/lora_B left
    changed = {k for k in base if not (merged[k] == base[k]).all()}
    assert changed and all(any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-c", NO_PEFT, str(folder), str(speech["domain"])], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    loaded_line, eval_line = out.stdout.strip().splitlines()[-2:]
    loaded = json.loads(loaded_line)
    assert loaded["class"] == "MoonshineStreamingForConditionalGeneration"
    assert not any("lora" in name for name in loaded["params"])
    without_peft = json.loads(eval_line)

    # the adapter through PEFT, as `orchestrator eval --adapter lora_adapter_best` scores it
    with_adapter = inference.evaluate_manifest(inference.load_adapter(best.path, device="cpu"), speech["domain"],
                                               progress=False)
    registry_wer = next(i.domain_wer for i in run.intervals if i.step == best.step)
    assert without_peft["wer"] == with_adapter.wer == registry_wer
    assert without_peft["utterances"] == with_adapter.n == 8
    assert without_peft["eval_loss"] == pytest.approx(with_adapter.loss, rel=1e-4)  # same logits, merged


def test_a_plain_export_is_a_peft_folder_with_its_processor_and_settings(trained, speech):
    spec, store, run = trained
    from orchestrator.exporting.merge import export_run

    out = Path(spec.output_dir) / "elsewhere" / "adapter"
    info = export_run(store, run.id, merge=False, out=out, which="last")
    assert not info.merged and info.step == run.artifact("lora_adapter_last").step
    assert {"adapter_config.json", "adapter_model.safetensors", "orchestrator_config.yaml",
            "orchestrator_export.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    exported = inference.load_adapter(out, device="cpu")  # the settings come from inside the folder
    assert exported.run_config == out / "orchestrator_config.yaml"
    last = run.intervals[-1]
    assert inference.evaluate_manifest(exported, speech["heldout"], progress=False).wer == last.heldout_wer
    assert export_run(store, run.id, merge=False, out=out, which="last").path == str(out)  # again: replaced
    assert not out.with_name("adapter.tmp").exists()


def test_exporting_an_unknown_run_or_adapter_is_one_line(trained):
    spec, store, run = trained
    proc = cli("export", "no-such-run", "--registry", spec.registry.url)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    from orchestrator.exporting.merge import export_run

    Path(run.artifact("lora_adapter_best").path, "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(OrchestratorError, match="differs from what the registry recorded"):
        export_run(store, run.id, merge=True)
