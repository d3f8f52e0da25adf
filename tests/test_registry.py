"""The run registry on real SQLite files: durability, upserts, errors, schema, listing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, column, create_engine, event, table, update

from orchestrator.errors import RegistryError
from orchestrator.registry import Interval, Run, Store
from orchestrator.registry.models import Base

ROOT = Path(__file__).resolve().parents[1]
RUN_FIELDS = dict(
    experiment="exp_1",
    config={"adapter": {"r": 8}, "optim": {"lr": 1e-4}},
    config_hash="abc123",
    model_id="UsefulSensors/moonshine-tiny",
    targets=["decoder.layers.0.self_attn.q_proj", "decoder.layers.0.self_attn.v_proj"],
    target_summary="decoder q,v (2)",
    lr=1e-4,
    steps=100,
    dora=False,
    git_commit="deadbeef",
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def store(url: str):
    store = Store(url)
    yield store
    store.close()


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports this checkout."""
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)


def test_intervals_survive_a_process_that_dies_mid_run(url: str) -> None:
    crashed = run_python(
        """
        import os, sys
        from orchestrator.registry import Store
        store = Store(sys.argv[1])
        run = store.create_run(experiment="crash", config={}, config_hash="h", model_id="m",
                               targets=["q"], target_summary="q", lr=1e-4, steps=10,
                               dora=False, git_commit=None, run_id="crash-1")
        store.add_interval(run.id, step=0, domain_wer=0.30, heldout_wer=0.10)
        store.add_interval(run.id, step=5, train_loss=1.5, domain_wer=0.20, heldout_wer=0.11)
        os._exit(1)  # no close(), no finish_run(), no interpreter shutdown
        """,
        url,
    )
    assert crashed.returncode == 1, crashed.stderr

    reopened = Store(url)
    run = reopened.get_run("crash-1")
    reopened.close()
    assert [i.step for i in run.intervals] == [0, 5]
    assert run.intervals[1].train_loss == 1.5
    assert run.status == "running" and run.ended_at is None


def test_exception_after_intervals_keeps_them(store: Store, url: str) -> None:
    run = store.create_run(**RUN_FIELDS)
    with pytest.raises(ZeroDivisionError):
        store.add_interval(run.id, step=0, domain_wer=0.3)
        store.add_interval(run.id, step=10, domain_wer=0.2)
        1 / 0
    other = Store(url)
    assert [i.step for i in other.get_run(run.id).intervals] == [0, 10]
    other.close()


def test_create_run_defaults(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    assert run.status == "running"
    assert run.id.startswith("exp_1-") and len(run.id.split("-")[-1]) == 6
    assert run.data_stats == {} and run.intervals == () and run.artifacts == ()
    assert run.started_at.tzinfo is not None and run.ended_at is None
    assert store.get_run(run.id) == run


def test_duplicate_run_id_is_a_registry_error(store: Store) -> None:
    store.create_run(**RUN_FIELDS, run_id="same")
    with pytest.raises(RegistryError, match="already exists"):
        store.create_run(**RUN_FIELDS, run_id="same")


def test_interval_upsert_replaces_the_row_for_that_step(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    store.add_interval(run.id, step=10, train_loss=2.0, domain_wer=0.5, domain_utts=8)
    store.add_interval(run.id, step=0, domain_wer=0.6)
    store.add_interval(run.id, step=10, train_loss=1.0, domain_wer=0.4, heldout_wer=0.1)

    intervals = store.get_run(run.id).intervals
    assert [i.step for i in intervals] == [0, 10]
    assert intervals[1].train_loss == 1.0 and intervals[1].domain_wer == 0.4
    assert intervals[1].heldout_wer == 0.1 and intervals[1].domain_utts is None


def test_artifact_upsert_by_kind(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    store.add_artifact(run.id, kind="adapter", path="a/step10", sha256="1" * 64, step=10)
    store.add_artifact(run.id, kind="config", path="a/config.yaml", sha256="2" * 64)
    store.add_artifact(run.id, kind="adapter", path="a/step20", sha256="3" * 64, step=20)

    artifacts = {a.kind: a for a in store.get_run(run.id).artifacts}
    assert set(artifacts) == {"adapter", "config"}
    assert (artifacts["adapter"].path, artifacts["adapter"].step) == ("a/step20", 20)
    assert artifacts["config"].step is None


def test_finish_run_records_status_reason_and_end(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    store.finish_run(run.id, "failed", reason="loss is NaN at step 40")
    done = store.get_run(run.id)
    assert (done.status, done.failure_reason) == ("failed", "loss is NaN at step 40")
    assert done.ended_at is not None and done.ended_at >= done.started_at


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_run("nope"),
        lambda s: s.add_interval("nope", step=0, domain_wer=0.1),
        lambda s: s.add_artifact("nope", kind="adapter", path="p", sha256="0"),
        lambda s: s.finish_run("nope", "finished"),
    ],
)
def test_unknown_run_is_a_registry_error_and_writes_nothing(store: Store, call) -> None:
    with pytest.raises(RegistryError) as error:
        call(store)
    assert "'nope'" in str(error.value) and "see `orchestrator runs`" in str(error.value)
    assert store.list_runs() == []


def test_unopenable_url_is_a_one_line_registry_error() -> None:
    url = "sqlite:////nonexistent_dir/x.db"
    with pytest.raises(RegistryError) as error:
        Store(url)
    message = str(error.value)
    assert "\n" not in message
    assert url in message
    assert "create the directory /nonexistent_dir" in message


def test_database_at_an_unknown_revision_is_refused(url: str) -> None:
    Store(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        version = table("alembic_version", column("version_num"))
        connection.execute(update(version).values(version_num="9999_from_the_future"))
    engine.dispose()

    with pytest.raises(RegistryError, match="9999_from_the_future"):
        Store(url)


def test_migrations_match_the_models(store: Store, url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_list_runs_oldest_first_without_n_plus_one(store: Store) -> None:
    for name in ["b", "a", "c"]:
        run = store.create_run(**{**RUN_FIELDS, "experiment": name}, data_stats={"utts": 3})
        store.add_interval(run.id, step=0, domain_wer=0.3)
        store.add_interval(run.id, step=10, domain_wer=0.2)
        store.add_artifact(run.id, kind="adapter", path="p", sha256="0" * 64)

    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        runs = store.list_runs()
    finally:
        event.remove(Engine, "before_cursor_execute", count)

    assert [r.experiment for r in runs] == ["b", "a", "c"]
    assert all(len(r.intervals) == 2 and len(r.artifacts) == 1 for r in runs)
    assert len(statements) <= 3  # runs, intervals, artifacts


def test_as_dict_is_json_serialisable(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS, data_stats={"train": {"utts": 12, "hours": 0.01}})
    store.add_interval(run.id, step=0, lr=0.0, domain_wer=0.3, domain_utts=4)
    store.add_artifact(run.id, kind="adapter", path="p", sha256="0" * 64, step=0)
    store.finish_run(run.id, "finished")

    data = json.loads(json.dumps(store.list_runs()[0].as_dict()))
    assert data["config"] == RUN_FIELDS["config"]
    assert data["started_at"].endswith("+00:00") and data["ended_at"]
    assert data["intervals"] == [
        {
            "step": 0,
            "lr": 0.0,
            "train_loss": None,
            "eval_loss": None,
            "domain_wer": 0.3,
            "heldout_wer": None,
            "domain_utts": 4,
            "heldout_utts": None,
        }
    ]
    assert data["artifacts"][0]["kind"] == "adapter"


def test_baseline_best_final() -> None:
    now = datetime.now(timezone.utc)

    def at(step: int, wer: float | None) -> Interval:
        return Interval(step, None, None, None, wer, None, None, None, created_at=now)

    fields = dict(RUN_FIELDS, id="r", status="done", data_stats={}, started_at=now)
    fields.update(ended_at=None, failure_reason=None)
    intervals = (at(0, 0.5), at(10, 0.2), at(20, None), at(30, 0.2), at(40, 0.3))
    run = Run(**fields, intervals=intervals)
    assert (run.baseline.step, run.best.step, run.final.step) == (0, 10, 40)

    empty = Run(**fields)
    assert empty.baseline is None and empty.final is None and empty.best is None


def test_parallel_writers_on_a_fresh_database(url: str) -> None:
    """Parallel runs (e.g. a joblib sweep) may all open a fresh registry at once."""
    code = """
        import sys
        from orchestrator.registry import Store
        store = Store(sys.argv[1])
        run = store.create_run(experiment="p", config={}, config_hash="h", model_id="m",
                               targets=["q"], target_summary="q", lr=1e-4, steps=10,
                               dora=False, git_commit=None, run_id=sys.argv[2])
        for step in range(20):
            store.add_interval(run.id, step=step, train_loss=1.0 / (step + 1))
        store.finish_run(run.id, "finished")
        """
    command = [sys.executable, "-c", textwrap.dedent(code), url]
    workers = [
        subprocess.Popen([*command, f"p{n}"], env=ENV, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, errors

    store = Store(url)
    runs = store.list_runs()
    store.close()
    assert sorted(r.id for r in runs) == ["p0", "p1", "p2", "p3"]
    assert all(len(r.intervals) == 20 and r.status == "finished" for r in runs)
