"""`orchestrator doctor`: a real registry and real run folders, put into each state doctor must tell."""
from __future__ import annotations

import fcntl
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator.registry.doctor import diagnose
from orchestrator.registry import Store

from conftest import cli


class Lab:
    """A registry with run folders under `outputs`, built with the store's own writes."""

    def __init__(self, root: Path):
        self.root, self.outputs = root, root / "outputs"
        self.url = f"sqlite:///{root / 'registry.db'}"
        self.store = Store(self.url)

    def run(self, name: str, *, status: str = "completed", intervals: int = 2, adapters: bool = True,
            lock: bool = True, config: bool = True) -> tuple[str, Path]:
        run = self.store.create_run(
            experiment="exp", config={"output_dir": str(self.outputs), "optim": {"lr": 1e-4}}, config_hash=name,
            model_id="m", targets=["q"], target_summary="q (1)", lr=1e-4, steps=4, dora=False, git_commit=None,
            run_id=name)
        folder = self.outputs / run.id
        folder.mkdir(parents=True)
        if lock:
            (folder / ".lock").touch()
        if config:
            (folder / "config.yaml").write_text("optim:\n  lr: 0.0001\n")
        for step in range(intervals):
            self.store.add_interval(run.id, step=2 * step, domain_wer=0.5, heldout_wer=0.1)
        if adapters:
            for kind in ("lora_adapter_best", "lora_adapter_last"):
                (folder / kind).mkdir()
                weights = folder / kind / "adapter_model.safetensors"
                weights.write_bytes(f"{name} {kind}".encode())
                self.store.add_artifact(run.id, kind=kind, path=str(folder / kind),
                                        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(), step=2)
        if status != "running":
            self.store.finish_run(run.id, status, None if status == "completed" else "why")
        return run.id, folder

    def kinds(self, **kw) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for f in diagnose(self.store, outputs=self.outputs, **kw).findings:
            found.setdefault(f.kind, set()).add(f.run)
        return found


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    lab = Lab(tmp_path)
    yield lab
    lab.store.close()


def test_a_sound_registry_is_healthy(lab: Lab):
    lab.run("good")
    lab.run("failed-early", status="failed", intervals=1, adapters=False)
    diagnosis = diagnose(lab.store, outputs=lab.outputs)
    assert diagnosis.healthy and diagnosis.findings == [] and diagnosis.runs == 2
    proc = cli("doctor", "--registry", lab.url, "--outputs", str(lab.outputs))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("2 runs checked: healthy"), proc.stdout + proc.stderr


def test_dead_running_run_is_reported_and_repaired_to_interrupted(lab: Lab):
    dead, _ = lab.run("dead", status="running", adapters=False)
    alive, alive_dir = lab.run("alive", status="running", adapters=False)
    with open(alive_dir / ".lock", "a") as held:  # a live trainer holds its lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lab.kinds() == {"stale_running": {dead}, "running": {alive}}
        proc = cli("doctor", "--registry", lab.url, "--outputs", str(lab.outputs), "--json")
        report = json.loads(proc.stdout)
        assert proc.returncode == 1 and not report["healthy"] and report["problems"] == 1
        rows_before = _row_counts(lab.root / "registry.db")

        proc = cli("doctor", "--registry", lab.url, "--outputs", str(lab.outputs), "--repair")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"problem: {dead}: recorded `running` but its training process is gone" in proc.stdout
        assert "[repaired]" in proc.stdout
    assert _row_counts(lab.root / "registry.db") == rows_before  # statuses only: nothing deleted
    repaired = lab.store.get_run(dead)
    assert repaired.status == "interrupted" and "orchestrator doctor" in repaired.failure_reason
    assert lab.store.get_run(alive).status == "running"  # never touched while its lock was held
    assert lab.kinds() == {"stale_running": {alive}}  # its lock is free now: dead too, and only it


def test_repair_leaves_a_run_that_was_resumed_meanwhile_alone(lab: Lab):
    dead, _ = lab.run("dead", status="running", adapters=False)
    seen = lab.store.get_run(dead).heartbeat_at
    lab.store.reopen(dead)  # a resumer took it over after doctor looked
    assert not lab.store.mark_interrupted(dead, "stale", seen_heartbeat=seen)
    assert lab.store.get_run(dead).status == "running"


def test_artifacts_missing_changed_or_pending(lab: Lab):
    changed, changed_dir = lab.run("changed")
    (changed_dir / "lora_adapter_best" / "adapter_model.safetensors").write_bytes(b"edited by hand")
    missing, missing_dir = lab.run("missing")
    (missing_dir / "lora_adapter_last" / "adapter_model.safetensors").unlink()
    pending, pending_dir = lab.run("pending", status="interrupted")  # killed between writing and recording
    (pending_dir / "lora_adapter_best" / "adapter_model.safetensors").write_bytes(b"next interval's adapter")
    incomplete, _ = lab.run("incomplete", adapters=False)
    found = lab.kinds()
    assert found == {"artifact_mismatch": {changed}, "missing_artifact": {missing}, "artifact_pending": {pending},
                     "incomplete": {incomplete}}
    diagnosis = diagnose(lab.store, outputs=lab.outputs)
    assert len(diagnosis.problems) == 4  # two `incomplete` lines (best and last) + mismatch + missing
    assert [f.severity for f in diagnosis.findings if f.kind == "artifact_pending"] == ["warning"]


def test_a_run_whose_folder_is_gone(lab: Lab):
    import shutil

    gone, folder = lab.run("gone")
    shutil.rmtree(folder)
    lab.run("never-started", status="failed", intervals=0, adapters=False, lock=False, config=False)
    shutil.rmtree(lab.outputs / "never-started")  # failed before it wrote anything: nothing to miss
    assert lab.kinds() == {"missing_run_dir": {gone}}


def test_folder_checks_config_checkpoint_leftovers_and_unregistered(lab: Lab):
    no_config, _ = lab.run("no-config", config=False)
    damaged, damaged_dir = lab.run("damaged")
    (damaged_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (damaged_dir / "config.yaml").write_text("optim: [unclosed\n")
    leftover, leftover_dir = lab.run("leftover")
    (leftover_dir / "checkpoint.pt.tmp").write_bytes(b"half")
    (lab.outputs / "stray-run").mkdir()
    (lab.outputs / ".audio_cache").mkdir()  # dot folders are the tool's own
    found = lab.kinds()
    assert found == {"no_config": {no_config}, "damaged_checkpoint": {damaged}, "damaged_config": {damaged},
                     "leftover": {leftover}, "unregistered_folder": {None}}
    infos = [f for f in diagnose(lab.store, outputs=lab.outputs).findings if f.severity == "info"]
    assert {f.kind for f in infos} == {"leftover", "unregistered_folder"}


def test_orphan_rows_written_with_foreign_keys_off(lab: Lab):
    lab.run("good")
    lab.store.close()
    with sqlite3.connect(lab.root / "registry.db") as db:
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("INSERT INTO intervals (run_id, step, created_at) VALUES ('gone', 0, '2026-01-01 00:00:00')")
        db.execute("INSERT INTO utterance_results (run_id, step, split, idx, audio_filepath, reference, hypothesis, "
                   "errors, ref_words) VALUES ('good', 99, 'domain', 0, 'a.wav', 'a', 'a', 0, 1)")
    lab.store = Store(lab.url)
    assert lab.store.orphan_counts() == {"intervals": 1, "artifacts": 0, "checks": 0, "utterance_results": 1}
    diagnosis = diagnose(lab.store, outputs=lab.outputs)
    assert [f.what for f in diagnosis.problems] == ["1 row(s) in intervals belong to no run",
                                                    "1 row(s) in utterance_results belong to no interval"]
    proc = cli("doctor", "--registry", lab.url, "--outputs", str(lab.outputs), "--repair")
    assert proc.returncode == 1 and "doctor deletes nothing" in proc.stdout
    assert lab.store.orphan_counts()["intervals"] == 1


def test_no_registry_is_one_line(tmp_path: Path):
    proc = cli("doctor", "--registry", f"sqlite:///{tmp_path / 'nope.db'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


def _row_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("runs", "intervals", "artifacts", "checks", "utterance_results")}
