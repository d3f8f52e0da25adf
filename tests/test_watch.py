"""`orchestrator watch`: one line per run from the registry while a campaign trains, a summary at the end."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from orchestrator.registry import Store
from orchestrator.report.progress import progress_table
from orchestrator.training import loop as train

from conftest import ROOT, cli


def test_a_finished_run_is_one_line_and_the_summary_gives_its_verdict(make_spec, run_overrides, tmp_path):
    started = datetime.now(timezone.utc) - timedelta(seconds=1)
    url = next(o.split("=", 1)[1] for o in run_overrides if o.startswith("registry.url="))
    store = Store(url)
    run = store.get_run(train.run(make_spec(), store, progress=False))
    store.close()
    # the last phase: parity's re-evaluation of the best adapter, with the trainer's forecast of its end
    assert run.progress_step == 4 and run.progress_phase == "parity heldout"
    assert run.started_at < run.progress_ends_at < run.ended_at + timedelta(minutes=1)
    proc = cli("watch", "--registry", url, "--once", "--summary", "--since", started.isoformat())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    line = next(line for line in lines if line.startswith(run.id))
    assert "4/4" in line and "completed" in line and "->" in line  # step, status, baseline -> latest WER
    summary = lines[next(i for i, line in enumerate(lines) if line.startswith("run ") and "verdict" in line):]
    row = next(line for line in summary if line.startswith(run.id))
    assert any(word in row for word in ("PASS", "FAIL", "INCONCLUSIVE"))
    later = cli("watch", "--registry", url, "--once", "--since", (datetime.now(timezone.utc) + timedelta(hours=1))
                .isoformat())
    assert later.returncode == 0 and "(no run yet)" in later.stdout and run.id not in later.stdout


def test_a_live_run_shows_its_phase_loss_and_an_eta(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    run = store.create_run(experiment="e", config={"optim": {"seed": 3}, "output_dir": str(tmp_path)},
                           config_hash="h", model_id="m", targets=["a"], target_summary="a (1)", lr=1e-4, steps=200,
                           dora=False, git_commit=None)
    store.progress(run.id, step=50, phase="train", loss=0.75)
    (live,) = store.list_runs()
    assert (live.progress_step, live.progress_loss, live.progress_phase) == (50, 0.75, "train")
    table = progress_table([live], now=live.started_at + timedelta(seconds=100))
    line = table.splitlines()[1]
    # 50 steps in 100 s: 150 more take 300 s
    assert line.split()[:5] == [run.id, "0.0001", "3", "50/200", "0.7500"] and line.endswith("5m00s")
    store.progress(run.id, step=100, phase="eval heldout @100")
    (live,) = store.list_runs()
    assert live.progress_loss == 0.75 and "eval heldout @100" in progress_table([live])
    # the trainer's forecast (training/pace.py), when it gives one, wins over steps per second
    store.progress(run.id, step=100, phase="eval heldout @100", seconds_left=400)
    (live,) = store.list_runs()
    assert live.progress_ends_at == live.heartbeat_at + timedelta(seconds=400)
    line = progress_table([live], now=live.heartbeat_at + timedelta(seconds=10)).splitlines()[1]
    assert line.endswith("6m30s")  # 100 steps in 100 s would say 1m40s
    store.progress(run.id, step=120, phase="train", seconds_left=None)  # no forecast (yet): the pace again
    (live,) = store.list_runs()
    assert live.progress_ends_at is None
    store.close()


def test_bad_since_is_one_line(tmp_path):
    Store(f"sqlite:///{tmp_path / 'r.db'}").close()
    proc = cli("watch", "--registry", f"sqlite:///{tmp_path / 'r.db'}", "--since", "yesterday")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --since") and "ISO 8601" in proc.stderr


def test_watch_ends_when_the_processes_it_waits_for_end(tmp_path):
    Store(f"sqlite:///{tmp_path / 'r.db'}").close()
    proc = cli("watch", "--registry", f"sqlite:///{tmp_path / 'r.db'}", "--while-pid", str(2 ** 22 + 7),
               "--every", "0.1")
    assert proc.returncode == 0 and "(no run" in proc.stdout  # a dead pid ends the watch at its first look


def test_watch_waits_for_the_registry_its_campaign_will_make(tmp_path):
    """--while-pid: a registry that does not exist yet is waited for while the process lives."""
    url = f"sqlite:///{tmp_path / 'later.db'}"
    maker = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(2); from orchestrator.registry import Store; "
                              f"Store({url!r}); time.sleep(1)"], env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = cli("watch", "--registry", url, "--while-pid", str(maker.pid), "--every", "0.2")
    maker.wait()
    assert out.returncode == 0, out.stderr
    assert "no run" in out.stdout
    assert cli("watch", "--registry", f"sqlite:///{tmp_path / 'never.db'}").returncode != 0  # nothing to wait for
