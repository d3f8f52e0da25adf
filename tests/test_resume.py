"""Run identity and exact resume: skip what finished, resume what was killed (on SQLite and
PostgreSQL, by the same command or `orchestrator resume`), match the twin; liveness (a dead
`running` run reads `interrupted`) and what `orchestrator resume` picks or refuses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import dataclasses
import time
from datetime import timedelta
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from orchestrator.artifacts.run_folder import LOCK
from orchestrator.registry import liveness
from orchestrator.training import resume, loop as train
from orchestrator.errors import OrchestratorError, RegistryError
from orchestrator.registry import Store
from orchestrator.config.spec import spec_from_overrides

from conftest import ROOT, cli, registry_url


def _url(overrides: list[str]) -> str:
    return next(o.split("=", 1)[1] for o in overrides if o.startswith("registry.url="))


def test_identical_finished_run_is_skipped_and_rerun_forces_it(run_overrides, make_spec):
    store = Store(_url(run_overrides))
    first = train.run(make_spec(), store, progress=False)
    again = train.run(make_spec(), store, progress=False)
    assert again == first and len(store.list_runs()) == 1
    forced = train.run(make_spec("rerun=true"), store, progress=False)
    assert forced != first and len(store.list_runs()) == 2
    other_lr = train.run(make_spec("optim.lr=5e-4"), store, progress=False)
    assert other_lr not in (first, forced) and len(store.list_runs()) == 3


def _metrics(run) -> list[tuple]:
    """Interval metrics to the printed precision (WER 2 decimals of a percent, losses 4 decimals)."""
    def r(x, n):
        return None if x is None else round(x, n)
    return [(i.step, r(100 * i.domain_wer, 2), r(100 * i.heldout_wer, 2), r(i.eval_loss, 4), r(i.train_loss, 4))
            for i in run.intervals]


TWINS: dict[str, list[tuple]] = {}  # config hash -> metrics of an uninterrupted run, computed once


def twin_metrics(overrides: list[str], folder) -> list[tuple]:
    """The interval metrics of an uninterrupted run of `overrides` (its own registry and outputs)."""
    spec = spec_from_overrides(overrides)
    if spec.config_hash not in TWINS:
        folder.mkdir()
        twin_overrides = [o for o in overrides if not o.startswith(("registry.url", "output_dir"))]
        twin_overrides += [f"registry.url=sqlite:///{folder / 'registry.db'}", f"output_dir={folder / 'outputs'}"]
        store = Store(_url(twin_overrides))
        twin = store.get_run(train.run(spec_from_overrides(twin_overrides), store, progress=False))
        store.close()
        assert twin.config_hash == spec.config_hash
        TWINS[spec.config_hash] = _metrics(twin)
    return TWINS[spec.config_hash]


# the PostgreSQL variant (20 s) runs with -m slow; the SQLite one in the default suite
@pytest.mark.parametrize("backend,how", [("sqlite", "same command"),
                                         pytest.param("postgresql", "orchestrator resume", marks=pytest.mark.slow)])
def test_sigkilled_run_resumes_to_the_metrics_of_an_uninterrupted_twin(backend, how, run_overrides, tmp_path,
                                                                        request):
    url = registry_url(backend, request, tmp_path)
    overrides = [o for o in run_overrides if not o.startswith(("optim.steps", "eval.interval", "registry.url"))]
    overrides += ["optim.steps=24", "eval.interval=6", "optim.lr=1e-2", "adapter.dropout=0.1", f"registry.url={url}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "orchestrator", "-m", *overrides]  # a sweep of one point

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store, deadline = Store(url), time.time() + 300
    while time.time() < deadline:  # kill it once two trained intervals are committed
        runs = store.list_runs()
        if runs and len(runs[0].intervals) >= 3:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = store.list_runs()
    assert killed.status == "running" and killed.intervals[-1].step < 24 and killed.sweep_id
    assert killed.pid == proc.pid and killed.heartbeat_at is not None
    listing = cli("runs", "--registry", url, check=True).stdout  # no live process: shown interrupted
    (row,) = [line.split() for line in listing.splitlines() if line.startswith(killed.id)]
    assert row[2] == "interrupted"  # recorded `running`, but its lock is free

    if how == "same command":
        resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    else:
        resumed = subprocess.run([sys.executable, "-m", "orchestrator", "resume", "--sweep", killed.sweep_id,
                                  "--registry", url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert f"{killed.id}: completed" in resumed.stdout
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run {killed.id}" in resumed.stderr
    (done,) = store.list_runs()
    store.close()
    assert done.id == killed.id and done.status == "completed" and done.sweep_id == killed.sweep_id
    assert [c.passed for c in done.checks] == [True]
    assert [i.step for i in done.intervals] == [0, 6, 12, 18, 24]
    assert _metrics(done) == twin_metrics(overrides, tmp_path / "twin")


# --- liveness and `orchestrator resume`'s choices (no training) ------------------------------

def _recorded(store: Store, run_overrides, run_id: str, *, sweep_id: str | None = "sweep-1"):
    """A run recorded as a real one would be: spec config in the registry and beside the run."""
    spec = spec_from_overrides(run_overrides)
    store.create_run(experiment=spec.experiment, config=spec.config, config_hash=spec.config_hash,
                     model_id=spec.model.id, targets=["q"], target_summary="q", lr=spec.optim.lr,
                     steps=spec.optim.steps, dora=False, git_commit=None, run_id=run_id, sweep_id=sweep_id)
    folder = Path(spec.output_dir) / run_id
    folder.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(spec.config), folder / "config.yaml")
    return spec, folder


def test_a_running_run_is_interrupted_when_its_lock_is_free_or_its_heartbeat_stale(run_overrides):
    store = Store(_url(run_overrides))
    _, folder = _recorded(store, run_overrides, "r1")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        "handle = open(sys.argv[1], 'a')\n"
        "fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"), str(folder / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = store.get_run("r1")
        assert liveness.lock_held(folder) is True and liveness.settle([run]) == [run]
    finally:
        holder.kill()
        holder.wait()
    (settled,) = liveness.settle([run])
    assert liveness.lock_held(folder) is False
    assert (settled.status, run.status) == ("interrupted", "running") and "lock free" in settled.failure_reason
    assert store.get_run("r1").status == "running"  # derived, never written

    # another host: its lock cannot be asked, the heartbeat decides
    remote = dataclasses.replace(run, host="gpu-node-17")
    later = run.heartbeat_at + liveness.STALE_AFTER
    assert liveness.why_dead(remote, now=later) is None
    why = liveness.why_dead(remote, now=later + timedelta(minutes=1))
    assert "no heartbeat on gpu-node-17 for 31 min" in why
    moved = dataclasses.replace(run, config={**run.config, "output_dir": "/nonexistent"})  # folder not here
    assert liveness.why_dead(moved, now=later + timedelta(minutes=1)) is not None
    store.close()


def test_resume_picks_interrupted_runs_and_refuses_what_it_cannot_continue(run_overrides, speech, tmp_path):
    store = Store(_url(run_overrides))
    _recorded(store, run_overrides, "done")
    store.finish_run("done", "completed")
    _recorded(store, run_overrides, "killed")
    store.finish_run("killed", "interrupted", "Ctrl-C")
    _recorded(store, run_overrides, "dead")  # `running`, lock file never held: its process is gone
    (Path(spec_from_overrides(run_overrides).output_dir) / "dead" / LOCK).touch()
    _recorded(store, run_overrides, "other", sweep_id="sweep-2")
    store.finish_run("other", "failed", "non-finite loss")

    assert [r.id for r in resume.select(store, sweep="sweep-1")] == ["killed", "dead"]
    assert resume.select(store, sweep="sweep-2") == []
    assert [r.id for r in resume.select(store, ["dead"])] == ["dead"]
    for args, match in [((["done"],), "done is completed, not interrupted"),
                        ((["other"],), "other is failed, not interrupted.*--rerun"),
                        ((), "give the runs to resume, or --sweep"),
                        ((["killed"], "sweep-1"), "not both"),
                        (([], "sweep-9"), "no run belongs to sweep 'sweep-9'")]:
        with pytest.raises(OrchestratorError, match=match):
            resume.select(store, *args)
    with pytest.raises(RegistryError, match="no run 'nope'"):
        resume.select(store, ["nope"])

    (killed,) = resume.select(store, ["killed"])
    spec = resume.spec_for(killed, "sqlite:///elsewhere.db")
    assert spec.config_hash == killed.config_hash and spec.registry.url == "sqlite:///elsewhere.db"
    with open(speech["domain"], "a") as manifest:  # the manifests changed since: no exact resume
        manifest.write("\n")
    try:
        with pytest.raises(OrchestratorError, match="cannot resume exactly"):
            resume.spec_for(killed, "sqlite:///elsewhere.db")
    finally:
        Path(speech["domain"]).write_text(Path(speech["domain"]).read_text()[:-1])
    config = Path(spec.output_dir) / "killed" / "config.yaml"
    config.unlink()
    with pytest.raises(OrchestratorError, match="no config.yaml for run killed"):
        resume.spec_for(killed, "sqlite:///elsewhere.db")
    refused = cli("resume", "done", "--registry", _url(run_overrides))
    assert refused.returncode == 2 and "done is completed" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    store.close()


@pytest.mark.slow  # a 160-step run killed and resumed beside its twin: about a minute
def test_eval_start_trains_without_evaluating_yet_checkpoints_every_interval_and_resumes_exactly(run_overrides,
                                                                                                 tmp_path):
    overrides = [o for o in run_overrides if not o.startswith(("optim.steps", "eval.interval"))]
    overrides += ["optim.steps=160", "eval.interval=40", "eval.start=120", "optim.lr=1e-2", "adapter.dropout=0.1"]
    spec = spec_from_overrides(overrides)
    assert spec.eval_steps == [0, 120, 160] and spec.checkpoint_steps == [40, 80]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *overrides], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store, deadline = Store(_url(overrides)), time.time() + 300
    while time.time() < deadline:  # kill it past the first checkpoint-only step (40), before step 120
        assert proc.poll() is None, "the run ended before it could be killed"
        runs = store.list_runs()
        if runs and (runs[0].progress_step or 0) > 45:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = store.list_runs()
    assert [i.step for i in killed.intervals] == [0]  # nothing evaluated between 0 and eval.start
    resumed = subprocess.run([sys.executable, "-m", "orchestrator", *overrides], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed.id} from step " in resumed.stderr and "from step 0" not in resumed.stderr
    (done,) = store.list_runs()
    store.close()
    assert [i.step for i in done.intervals] == [0, 120, 160]
    assert _metrics(done) == twin_metrics(overrides, tmp_path / "twin")  # train loss since step 0 kept too
