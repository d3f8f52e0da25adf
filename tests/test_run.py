"""Real few-step runs on tiny_random with espeak-ng speech: registry, artifacts, report, failures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from orchestrator.training import modeling, loop as train
from orchestrator.artifacts.atomic import sha256_file
from orchestrator.errors import OrchestratorError
from orchestrator.registry import Store
from orchestrator.report import update_experiments_md
from orchestrator.config.schema import ModelConf
from orchestrator.config.spec import spec_from_overrides
from orchestrator.selection import select_best

from conftest import cli


def registry(overrides: list[str]) -> Store:
    url = next(o.split("=", 1)[1] for o in overrides if o.startswith("registry.url="))
    return Store(url)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_real_run_records_intervals_artifacts_and_report(run_overrides, make_spec, tmp_path, kind):
    spec = make_spec(f"adapter={kind}")
    store = registry(run_overrides)
    run_id = train.run(spec, store, progress=False)

    run = store.get_run(run_id)
    assert run.status == "completed" and run.dora == (kind == "dora")
    assert [i.step for i in run.intervals] == [0, 2, 4]
    for interval in run.intervals:
        assert 0 <= interval.domain_wer and 0 <= interval.heldout_wer and interval.eval_loss > 0
        assert (interval.domain_utts, interval.heldout_utts) == (8, 8)
    assert all(i.train_loss > 0 for i in run.intervals[1:])
    assert run.data_stats["train"] == {"utterances": 16, "dropped_too_long": 0}
    assert len(run.targets) == 24 and run.target_summary == "enc+dec attn q,k,v,o (24)"  # 2+2 layers

    run_dir = tmp_path / "outputs" / run_id
    artifacts = {a.kind: a for a in run.artifacts}
    assert set(artifacts) == {"lora_adapter_best", "lora_adapter_last"}
    for a in artifacts.values():
        assert Path(a.path) == run_dir / a.kind
        assert sha256_file(Path(a.path) / "adapter_model.safetensors") == a.sha256
    assert artifacts["lora_adapter_best"].step == select_best(run.intervals, 0.2).interval.step > 0
    (parity,) = run.checks
    assert parity.name == "parity" and parity.passed, parity.details  # reloaded from disk, same WERs
    assert store.utterance_errors(run_id, 4, "domain")[1].sum() > 0  # per-utterance results stored
    assert (run_dir / "config.yaml").read_text().count("global_qkvo") == 1

    base, _ = modeling.load(ModelConf(name="t", id=spec.model.id), torch.device("cpu"))
    PeftModel.from_pretrained(base, artifacts["lora_adapter_best"].path)  # loadable by PEFT as is

    md = tmp_path / "EXPERIMENTS.md"
    md.write_text("# Experiments\n\nOur hand-written history.\n")
    update_experiments_md(md, store.list_runs())
    text = md.read_text()
    assert text.startswith("# Experiments\n\nOur hand-written history.\n")
    row = next(line for line in text.splitlines() if line.startswith(f"| {run_id}"))
    assert "enc+dec attn q,k,v,o (24)" in row and "completed" in row
    store.close()


def test_intervals_survive_a_run_that_fails_midway(run_overrides):
    """A run that diverges after its first intervals: those intervals stay, the run is failed.
    (Broken audio can no longer fail a run midway: every file is decoded before a row exists.)"""
    ov = [o for o in run_overrides if not o.startswith(("optim.steps", "eval.interval"))]
    spec = spec_from_overrides([*ov, "optim.steps=6", "eval.interval=2", "optim.lr=1e3"])
    store = registry(run_overrides)
    with pytest.raises(OrchestratorError, match="non-finite"):
        train.run(spec, store, progress=False)
    (run,) = store.list_runs()
    assert run.status == "failed" and "non-finite" in run.failure_reason
    assert [i.step for i in run.intervals][:2] == [0, 2]
    assert run.intervals[0].domain_wer is not None
    store.close()



def test_an_interval_hook_stops_the_run_as_pruned_and_keeps_its_intervals(run_overrides):
    """`on_interval` sees every interval so far (in memory, the registry's values) after each
    evaluation; the reason it returns ends the run there: `pruned`, with that stop_reason."""
    ov = [o for o in run_overrides if not o.startswith(("optim.steps", "eval.interval"))]
    spec = spec_from_overrides([*ov, "optim.steps=6", "eval.interval=2"])
    store = registry(run_overrides)
    seen: list[list[int]] = []

    def hook(intervals):
        seen.append([i.step for i in intervals])
        assert intervals == [i._replace(created_at=None) for i in store.get_run(run_id_of(store)).intervals]
        return "heldout guard blown at step 2" if intervals[-1].step == 2 else None

    run_id = train.run(spec, store, progress=False, on_interval=hook)
    run = store.get_run(run_id)
    assert seen == [[0, 2]]  # not called for the baseline; not called again after the stop
    assert run.status == "pruned" and run.stop_reason == "heldout guard blown at step 2"
    assert [i.step for i in run.intervals] == [0, 2]
    assert {a.kind: a.step for a in run.artifacts} == {"lora_adapter_best": 2, "lora_adapter_last": 2}
    assert run.check("parity") is None  # a pruned run is no candidate: nothing to re-check
    store.close()


def run_id_of(store: Store) -> str:
    (run,) = store.list_runs()
    return run.id

def test_cli_run_then_runs_json_and_report(run_overrides, tmp_path):
    proc = cli("run", *run_overrides, check=True)
    url = next(o.split("=", 1)[1] for o in run_overrides if o.startswith("registry.url="))
    runs = json.loads(cli("runs", "--registry", url, "--json", check=True).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "completed" and runs[0]["experiment"] == "smoke_tiny_random"
    assert [i["step"] for i in runs[0]["intervals"]] == [0, 2, 4]
    assert all(i["domain_wer"] is not None and i["heldout_wer"] is not None for i in runs[0]["intervals"])
    assert set(runs[0]["intervals"][0]) >= {"step", "domain_wer", "heldout_wer", "eval_loss", "train_loss"}
    cli("report", "--registry", url, "--output", str(tmp_path / "EXPERIMENTS.md"), check=True)
    assert runs[0]["id"] in (tmp_path / "EXPERIMENTS.md").read_text()
    assert "Traceback" not in proc.stderr


def _manifest(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("case,expect", [
    ("missing_audio", ":2: audio file not found"),
    ("malformed", ":2: malformed JSON"),
    ("missing_key", ':2: missing "text"'),
    ("empty", "no utterances"),
])
def test_bad_manifest_gives_one_line_and_leaves_registry_empty(run_overrides, speech, tmp_path, case, expect):
    good = speech["train"].read_text().splitlines()[0]
    lines = {"missing_audio": [good, json.dumps({"audio_filepath": "nope.wav", "text": "hello"})],
             "malformed": [good, '{"audio_filepath": "x.wav", "text": '],
             "missing_key": [good, json.dumps({"audio_filepath": json.loads(good)["audio_filepath"]})],
             "empty": []}[case]
    bad = _manifest(speech["train"].parent if case != "empty" else tmp_path, lines)
    try:
        proc = cli(*run_overrides, f"data.train_manifest={bad}")
    finally:
        bad.unlink()
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and "fix:" in err[0] and "Traceback" not in proc.stderr
    url = next(o.split("=", 1)[1] for o in run_overrides if o.startswith("registry.url="))
    assert Store(url).list_runs() == []


def test_unknown_experiment_lists_the_known_ones():
    proc = cli("+exp=exp_9_9_nope")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "unknown experiment" in proc.stderr and "exp_2_5_v2_universal_lora" in proc.stderr


def test_typo_key_is_one_line():
    proc = cli("+exp=exp_2_5_v2_universal_lora", "optim.lrr=1e-4")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "lrr" in proc.stderr


def test_importing_the_report_leaves_torch_unimported():
    import subprocess
    code = "import sys, orchestrator.report, orchestrator.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("exp", ["exp_2_3_v2_bridge_focus", "exp_2_4_v2_true_bridge", "exp_2_5_v2_universal_lora"])
def test_seed_target_specs_run_end_to_end_on_tiny_random(run_overrides, exp):
    """The seeds' target presets (and adapter kinds), resolved and trained on tiny_random."""
    from omegaconf import OmegaConf

    from orchestrator.config.spec import compose
    from orchestrator.training.targets import resolve

    seed = spec_from_overrides([f"+exp={exp}"])
    spec = spec_from_overrides([*run_overrides, f"targets={seed.targets.name}", f"adapter={seed.adapter.kind}",
                                "optim.steps=2", "eval.interval=2"])
    store = registry(run_overrides)
    run = store.get_run(train.run(spec, store, progress=False))
    base, _ = modeling.load(ModelConf(name="t", id=spec.model.id), torch.device("cpu"))
    expected = resolve(base, OmegaConf.to_object(compose([f"targets={seed.targets.name}"]).targets))
    assert run.status == "completed" and run.dora == (seed.adapter.kind == "dora")
    assert sorted(run.targets) == sorted(expected.names) and run.target_report["identity_errors"] == 0
    store.close()
