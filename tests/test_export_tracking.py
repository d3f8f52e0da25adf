"""export-mlflow, export-tensorboard and the report's curves, on a registry of two real runs: read
back with MlflowClient, from the TensorBoard event files and as PNG and SVG."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from orchestrator.acceptance.verdicts import criteria_for, judge
from orchestrator.artifacts.atomic import sha256_file
from orchestrator.config.spec import spec_from_overrides
from orchestrator.registry import Store
from orchestrator.training import loop as train

from conftest import cli


@pytest.fixture(scope="module")
def two_runs(speech, tiny_checkpoint, tmp_path_factory):
    """A plain run to the end and one that early stopping ends at step 2, in one registry
    (trained once for the module's tests, which only read it)."""
    home = tmp_path_factory.mktemp("two_runs")
    run_overrides = ["+exp=smoke_tiny_random", f"model.id={tiny_checkpoint}", f"data.train_manifest={speech['train']}",
                     f"eval.domain_manifest={speech['domain']}", f"eval.heldout_manifest={speech['heldout']}",
                     f"registry.url=sqlite:///{home / 'registry.db'}", f"output_dir={home / 'outputs'}",
                     "optim.steps=4", "eval.interval=2", "model.tokens_per_second=5"]
    store = Store(spec_from_overrides(run_overrides).registry.url)
    plain = train.run(spec_from_overrides(run_overrides), store, progress=False)
    stopped = train.run(spec_from_overrides([*run_overrides, "optim.lr=5e-4", "optim.early_stopping.enabled=true",
                                             "optim.early_stopping.patience=1",
                                             "optim.early_stopping.min_delta=100"]), store, progress=False)
    runs = [store.get_run(plain), store.get_run(stopped)]
    assert [r.intervals[-1].step for r in runs] == [4, 2] and runs[1].stop_reason
    yield store, runs, f"sqlite:///{home / 'registry.db'}"
    store.close()


def test_export_mlflow_writes_params_every_interval_verdicts_and_the_adapter(two_runs, tmp_path):
    from mlflow.tracking import MlflowClient

    store, runs, registry = two_runs
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli("export-mlflow", "--tracking-uri", uri, "--registry", registry, check=True)
    assert proc.stdout.strip().endswith(f"{uri}: 2 runs")
    from orchestrator.exporting.mlflow import export_runs

    assert set(export_runs(store, runs, uri)) == {r.id for r in runs}  # again: replaces the first export

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("smoke_tiny_random")
    assert Path(experiment.artifact_location.removeprefix("file://")) == tmp_path / "mlartifacts" / "smoke_tiny_random"
    found = {r.data.tags["orchestrator.run_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(found) == {r.id for r in runs}  # one MLflow run each, the first export's deleted
    for run in runs:
        mlflow_run = found[run.id]
        assert mlflow_run.info.run_name == run.id and mlflow_run.info.status == "FINISHED"
        params = mlflow_run.data.params
        assert float(params["lr"]) == run.lr and params["optim.steps"] == "4" and params["model_id"] == run.model_id
        assert params["optim.early_stopping.enabled"] == ("true" if run.stop_reason else "false")
        for key in ("domain_wer", "heldout_wer", "eval_loss", "train_loss", "lr"):
            history = client.get_metric_history(mlflow_run.info.run_id, key)
            expected = [(i.step, getattr(i, key)) for i in run.intervals if getattr(i, key) is not None]
            assert sorted((m.step, m.value) for m in history) == expected, key
        verdict = judge(run, store, criteria_for(run))
        tags = mlflow_run.data.tags
        assert tags["verdict.overall"] == verdict.overall and tags["status"] == "completed"
        assert {k: tags[f"verdict.{k}"] for k in (v.name for v in verdict.criteria)} == \
            {v.name: v.status for v in verdict.criteria}
        assert tags.get("stop_reason") == run.stop_reason
        listed = {f.path for f in client.list_artifacts(mlflow_run.info.run_id, "lora_adapter_best")}
        assert "lora_adapter_best/adapter_model.safetensors" in listed
        local = client.download_artifacts(mlflow_run.info.run_id, "lora_adapter_best", str(tmp_path / run.id))
        assert sha256_file(Path(local) / "adapter_model.safetensors") == run.artifact("lora_adapter_best").sha256


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the folder's event files: TFRecord framing (length, crc, data, crc)
    around tensorboardX's Event protos."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_export_tensorboard_writes_each_interval_as_scalars(two_runs, tmp_path):
    store, runs, registry = two_runs
    from orchestrator.exporting.tensorboard import export_runs

    export_runs(runs, tmp_path / "tb")
    proc = cli("export-tensorboard", "--logdir", str(tmp_path / "tb"), "--registry", registry, check=True)
    assert proc.stdout.strip().endswith("2 runs")  # and its event files replaced the first export's
    for run in runs:
        scalars = read_scalars(tmp_path / "tb" / run.id)
        assert set(scalars) == {"wer/domain", "wer/heldout", "loss/eval", "loss/train", "lr"}
        assert scalars["wer/domain"] == [(i.step, pytest.approx(i.domain_wer)) for i in run.intervals]
        assert scalars["loss/train"] == [(i.step, pytest.approx(i.train_loss)) for i in run.intervals[1:]]
        assert len(list((tmp_path / "tb" / run.id).glob("events.out.tfevents.*"))) == 1


def test_the_report_draws_each_runs_curves_and_says_why_a_run_ended(two_runs, tmp_path):
    import xml.etree.ElementTree as ET

    from matplotlib.image import imread

    from orchestrator.report import update_experiments_md

    store, runs, _ = two_runs
    md = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(md, runs, utterances=store)
    text = md.read_text()
    svg_ns = "{http://www.w3.org/2000/svg}"
    for run in runs:
        folder = tmp_path / "experiments" / "curves"
        assert f"![WER and loss by step](experiments/curves/{run.id}.png)" in text
        assert imread(folder / f"{run.id}.png").shape == (480, 640, 4)
        root = ET.parse(folder / f"{run.id}.svg").getroot()  # well-formed SVG
        labels = {(t.text or "").strip() for t in root.iter(f"{svg_ns}text")}
        selected = judge(run, store, criteria_for(run)).selection
        assert {"domain WER", "heldout WER", "eval loss (domain)", "train loss", "heldout guard (+0.2 pts)",
                f"selected (step {selected.interval.step})"} <= labels
    stopped = runs[1]
    row = next(line for line in text.splitlines() if line.startswith(f"| {stopped.id}"))
    assert "early stopping: dev loss" in row  # the run matrix's note
    assert f"- Ended at step 2 of 4 (completed): {stopped.stop_reason}" in text  # its verdict section
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "experiments" / "curves").iterdir()}
    update_experiments_md(md, runs, utterances=store)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # unchanged curves are not rewritten
