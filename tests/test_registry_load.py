"""The registry under load: 16 processes write 500 intervals each to one registry at once (the
schema migrated once by the parent before they start), on SQLite and on PostgreSQL. Every row
must be there and no worker may see an error."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.registry import Store

from conftest import BACKENDS, ROOT, registry_url

WORKERS, INTERVALS = 16, 500
WORKER = textwrap.dedent("""
    import sys
    from orchestrator.registry import Store
    url, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(url)
    store.create_run(experiment="load", config={"worker": run_id}, config_hash="h", model_id="m",
                     targets=["q"], target_summary="q", lr=1e-4, steps=n, dora=False, git_commit=None,
                     run_id=run_id, sweep_id="load-sweep")
    for step in range(n):
        store.add_interval(run_id, step=step, lr=1e-4, train_loss=1.0 / (step + 1), domain_wer=step / n,
                           heldout_wer=0.1, domain_utts=step)
        if step % 25 == 0:
            store.heartbeat(run_id)
            store.get_run(run_id)  # readers interleaved with the writers
    store.finish_run(run_id, "completed")
    store.close()
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_16_writers_x_500_intervals_lose_nothing(backend: str, request: pytest.FixtureRequest,
                                                 tmp_path: Path) -> None:
    url = registry_url(backend, request, tmp_path)
    Store(url).close()  # migrated once, here, before any worker starts
    started = time.monotonic()
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, f"w{n:02d}", str(INTERVALS)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(WORKERS)]
    outcomes = [(w.wait(timeout=300), *w.communicate()) for w in workers]
    elapsed = time.monotonic() - started
    assert [rc for rc, _, _ in outcomes] == [0] * WORKERS, [err for _, _, err in outcomes if err]
    assert all(not out and not err for _, out, err in outcomes), outcomes  # no error, no warning

    store = Store(url)
    runs = store.list_runs()
    store.close()
    assert sorted(r.id for r in runs) == [f"w{n:02d}" for n in range(WORKERS)]
    assert sum(len(r.intervals) for r in runs) == WORKERS * INTERVALS
    for run in runs:
        assert run.status == "completed" and run.sweep_id == "load-sweep" and run.heartbeat_at is not None
        assert [i.step for i in run.intervals] == list(range(INTERVALS))
        assert all(i.domain_wer == i.step / INTERVALS and i.domain_utts == i.step for i in run.intervals)
    print(f"{backend}: {WORKERS} x {INTERVALS} intervals in {elapsed:.1f} s")
