"""Run identity and exact resume: skip what finished, resume what was killed, match the twin."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from orchestrator import train
from orchestrator.registry import Store
from orchestrator.spec import spec_from_overrides

from conftest import ROOT


def _url(overrides: list[str]) -> str:
    return next(o.split("=", 1)[1] for o in overrides if o.startswith("registry.url="))


def test_identical_finished_run_is_skipped_and_rerun_forces_it(run_overrides):
    store = Store(_url(run_overrides))
    first = train.run(spec_from_overrides(run_overrides), store, progress=False)
    again = train.run(spec_from_overrides(run_overrides), store, progress=False)
    assert again == first and len(store.list_runs()) == 1
    forced = train.run(spec_from_overrides([*run_overrides, "rerun=true"]), store, progress=False)
    assert forced != first and len(store.list_runs()) == 2
    other_lr = train.run(spec_from_overrides([*run_overrides, "optim.lr=5e-4"]), store, progress=False)
    assert other_lr not in (first, forced) and len(store.list_runs()) == 3


def _metrics(run) -> list[tuple]:
    """Interval metrics to the printed precision (WER 2 decimals of a percent, losses 4 decimals)."""
    def r(x, n):
        return None if x is None else round(x, n)
    return [(i.step, r(100 * i.domain_wer, 2), r(100 * i.heldout_wer, 2), r(i.eval_loss, 4), r(i.train_loss, 4))
            for i in run.intervals]


def test_sigkilled_run_resumes_to_the_metrics_of_an_uninterrupted_twin(run_overrides, tmp_path):
    overrides = [o for o in run_overrides if not o.startswith(("optim.steps", "eval.interval"))]
    overrides += ["optim.steps=24", "eval.interval=6", "optim.lr=1e-2", "adapter.dropout=0.1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "orchestrator", *overrides]

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store, deadline = None, time.time() + 300
    while time.time() < deadline:  # kill it once two trained intervals are committed
        if (tmp_path / "registry.db").exists():
            store = store or Store(_url(overrides))
            runs = store.list_runs()
            if runs and len(runs[0].intervals) >= 3:
                break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = store.list_runs()
    assert killed.status == "running" and killed.intervals[-1].step < 24

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run {killed.id}" in resumed.stderr
    (done,) = store.list_runs()
    assert done.id == killed.id and done.status == "completed"
    assert [c.passed for c in done.checks] == [True]

    twin_dir = tmp_path / "twin"
    twin_dir.mkdir()
    twin_overrides = [o for o in overrides if not o.startswith(("registry.url", "output_dir"))]
    twin_overrides += [f"registry.url=sqlite:///{twin_dir / 'registry.db'}", f"output_dir={twin_dir / 'outputs'}"]
    twin_store = Store(_url(twin_overrides))
    twin = twin_store.get_run(train.run(spec_from_overrides(twin_overrides), twin_store, progress=False))
    assert twin.config_hash == done.config_hash
    assert _metrics(done) == _metrics(twin)
    assert [i.step for i in done.intervals] == [0, 6, 12, 18, 24]
