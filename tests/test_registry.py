"""The run registry on real SQLite files and a real PostgreSQL server (every test taking `url`
or `store` runs on both): durability, upserts, errors, schema, migration, listing,
per-utterance results, checks, annotations, external runs and liveness."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, column, create_engine, event, select, table, text, update
from sqlalchemy.exc import IntegrityError

from orchestrator.errors import RegistryError
from orchestrator.training.evaluate import UtteranceResult
from orchestrator.registry import Interval, Run, Store, UtteranceRow
from orchestrator.registry import store as store_module
from orchestrator.registry.models import Base, SqlRun
from orchestrator.registry.store import MIGRATIONS

from conftest import BACKENDS, registry_url
from factories import interval

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


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return registry_url(request.param, request, tmp_path)


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


def test_unreachable_postgresql_is_a_one_line_registry_error() -> None:
    url = "postgresql+psycopg://orchestrator:secret@127.0.0.1:1/registry"  # nothing listens on port 1
    with pytest.raises(RegistryError) as error:
        Store(url)
    message = str(error.value)
    assert "\n" not in message and "secret" not in message and "127.0.0.1:1/registry" in message
    assert "check that the database server is reachable" in message


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
    assert len(statements) <= 4  # runs, intervals, artifacts, checks (never utterances)


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
            "select_wer": None,
            "select_utts": None,
        }
    ]
    assert data["artifacts"][0]["kind"] == "adapter"


def test_baseline_best_final() -> None:
    now = datetime.now(timezone.utc)

    def at(step: int, wer: float | None) -> Interval:
        return interval(step, wer, created_at=now)

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


# --- 0002: per-utterance results, checks, annotations, external runs ---------------------------

def utterance(i: int, errors: int, words: int = 4) -> UtteranceResult:
    return UtteranceResult(f"a/{i}.wav", " ".join(["w"] * words), f"hyp {i}", errors, words)


def test_interval_and_its_utterances_in_one_transaction(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    domain = [utterance(0, 1), {"audio_filepath": "a/1.wav", "reference": "x y", "hypothesis": "x",
                                "errors": np.int64(1), "ref_words": 2}, utterance(2, 0)]
    store.add_interval(run.id, step=0, domain_wer=2 / 10, utterances={"domain": domain, "heldout": [utterance(9, 3)]})

    errors, words = store.utterance_errors(run.id, 0, "domain")
    assert errors.tolist() == [1, 1, 0] and words.tolist() == [4, 2, 4] and errors.dtype == np.int64
    rows = store.utterances(run.id, 0, "domain")
    assert rows[1] == UtteranceRow(0, "domain", 1, "a/1.wav", "x y", "x", 1, 2)
    assert [r.idx for r in rows] == [0, 1, 2]
    assert store.utterance_errors(run.id, 0, "heldout")[0].tolist() == [3]
    empty = store.utterance_errors(run.id, 5, "domain")
    assert empty[0].size == 0 and empty[1].size == 0

    broken = [utterance(0, 1), {**vars(utterance(1, 0)), "reference": None}]  # NOT NULL fails in the insert
    with pytest.raises(IntegrityError):
        store.add_interval(run.id, step=10, domain_wer=0.1, utterances={"domain": broken})
    assert [i.step for i in store.get_run(run.id).intervals] == [0]  # the interval rolled back too
    with pytest.raises(RegistryError, match="lacks 'errors'"):
        store.add_interval(run.id, step=10, utterances={"domain": [{"audio_filepath": "a", "reference": "r",
                                                                    "hypothesis": "h", "ref_words": 1}]})
    with pytest.raises(RegistryError, match="unknown evaluation split 'test'"):
        store.add_interval(run.id, step=10, utterances={"test": [utterance(0, 1)]})


def test_rewriting_an_interval_replaces_only_the_splits_given(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    store.add_interval(run.id, step=4, utterances={"domain": [utterance(0, 1)] * 3, "heldout": [utterance(0, 2)]})
    store.add_interval(run.id, step=4, utterances={"domain": [utterance(0, 0)]})
    assert store.utterance_errors(run.id, 4, "domain")[0].tolist() == [0]
    assert store.utterance_errors(run.id, 4, "heldout")[0].tolist() == [2]
    store.add_interval(run.id, step=4, domain_wer=0.5)
    assert store.utterance_errors(run.id, 4, "domain")[0].tolist() == [0]


def test_new_run_fields_and_checks(store: Store) -> None:
    criteria = {"min_domain_reduction": 1.0, "max_heldout_regression": 0.2}
    report = {"by_component": {"decoder": 8}, "skipped": [], "empty_components": [], "identity_errors": 0}
    run = store.create_run(**RUN_FIELDS, criteria=criteria, target_report=report, sweep_id="sweep-1")
    assert (run.criteria, run.target_report, run.sweep_id, run.external) == (criteria, report, "sweep-1", False)
    assert store.create_run(**RUN_FIELDS).criteria == {} and store.list_runs()[1].target_report is None

    store.add_check(run.id, "parity", True, {"domain_wer": 0.25})
    store.add_check(run.id, "parity", False, {"domain_wer": 0.26})
    store.add_check(run.id, "another", True)
    checks = store.get_run(run.id).checks
    assert [(c.name, c.passed, c.details) for c in checks] == [("another", True, {}),
                                                               ("parity", False, {"domain_wer": 0.26})]
    assert store.get_run(run.id).check("parity").passed is False
    with pytest.raises(RegistryError, match="no run 'nope'"):
        store.add_check("nope", "parity", True)
    json.dumps(store.get_run(run.id).as_dict())


def test_annotate_sets_overrides_and_clears(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    store.annotate(run.id, "flawed", "missed the adapter | <b>")
    got = store.get_run(run.id)
    assert (got.annotation_status, got.annotation_note) == ("flawed", "missed the adapter | <b>")
    store.annotate(run.id, None)
    got = store.get_run(run.id)
    assert (got.annotation_status, got.annotation_note) == (None, None)
    with pytest.raises(RegistryError, match="short lower-case word"):
        store.annotate(run.id, "Flawed!\n")
    with pytest.raises(RegistryError, match="no run 'nope'"):
        store.annotate("nope", "flawed")


def test_record_external(store: Store) -> None:
    run = store.record_external(
        experiment="exp_2_4_v2_true_bridge", model_id="UsefulSensors/moonshine-streaming-tiny", steps=1000,
        lr=1e-5, target_summary="dec attn+mlp", dora=True, annotation_status="failed", annotation_note="seeds",
        intervals=[{"step": 600, "domain_wer": 0.1264, "heldout_wer": 0.0492},
                   {"step": 0, "domain_wer": 0.1240, "heldout_wer": 0.0479}], run_id="ext-1")
    assert run == store.get_run("ext-1")
    assert (run.external, run.status, run.dora, run.annotation_status) == (True, "completed", True, "failed")
    assert [(i.step, i.domain_wer, i.heldout_wer) for i in run.intervals] == [(0, 0.1240, 0.0479),
                                                                              (600, 0.1264, 0.0492)]
    assert run.ended_at is not None and run.artifacts == () and run.targets == []
    with pytest.raises(RegistryError, match="already exists"):
        store.record_external(experiment="e", model_id="m", steps=1, lr=1.0, target_summary="t", dora=False,
                              intervals=[], run_id="ext-1")
    with pytest.raises(RegistryError, match="repeats a step"):
        store.record_external(experiment="e", model_id="m", steps=1, lr=1.0, target_summary="t", dora=False,
                              intervals=[{"step": 0}, {"step": 0}])
    for bad in ({"step": 0, "domain": 0.1}, {"domain_wer": 0.1}):
        with pytest.raises(RegistryError, match="needs a step and only the fields"):
            store.record_external(experiment="e", model_id="m", steps=1, lr=1.0, target_summary="t", dora=False,
                                  intervals=[bad])
    assert len(store.list_runs()) == 1


def test_an_0001_database_is_upgraded_in_place_keeping_its_rows(url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO runs (id, experiment, status, config, config_hash, model_id, targets, target_summary,"
            " lr, steps, dora, git_commit, data_stats, started_at) VALUES ('old-1', 'exp_old', 'completed',"
            " '{\"a\": 1}', 'h', 'm', '[\"q\"]', 'q (1)', 0.0001, 10, false, NULL, '{}', '2025-01-01 00:00:00')"))
        for step, wer in ((0, 0.3), (10, 0.2)):
            connection.execute(text("INSERT INTO intervals (run_id, step, domain_wer, created_at) "
                                    f"VALUES ('old-1', {step}, {wer}, '2025-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO artifacts (run_id, kind, path, sha256, step, created_at) "
                                "VALUES ('old-1', 'lora_adapter_best', 'p', 'abc', 10, '2025-01-01 00:00:00')"))
        assert MigrationContext.configure(connection).get_current_revision() == "0001"
    engine.dispose()

    store = Store(url)
    run = store.get_run("old-1")
    writes = select(SqlRun.interval_writes).where(SqlRun.id == "old-1")
    counted = store._transact(lambda session: session.scalar(writes), read_only=True)  # 0007 counts its 2 intervals
    store.add_interval("old-1", step=20, domain_wer=0.1, utterances={"domain": [utterance(0, 1)]})
    store.add_interval("old-1", step=20, domain_wer=0.1)  # a replacement is a write too (the report's digest)
    assert (counted, store._transact(lambda session: session.scalar(writes), read_only=True)) == (2, 4)
    store.close()
    assert (run.experiment, run.config, run.targets, run.status) == ("exp_old", {"a": 1}, ["q"], "completed")
    assert [(i.step, i.domain_wer) for i in run.intervals] == [(0, 0.3), (10, 0.2)]
    assert run.artifact("lora_adapter_best").sha256 == "abc"
    assert (run.external, run.criteria, run.target_report, run.annotation_status, run.checks) == (
        False, {}, None, None, ())
    engine = create_engine(url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == store_module.HEAD_REVISION
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


# --- 0003: liveness columns; transient conflicts ---------------------------------------------

def test_heartbeat_records_this_process(store: Store) -> None:
    run = store.create_run(**RUN_FIELDS)
    assert run.host == socket.gethostname() and run.pid == os.getpid() and run.heartbeat_at == run.started_at
    store.heartbeat(run.id)
    beaten = store.get_run(run.id)
    assert beaten.heartbeat_at > run.heartbeat_at and (beaten.host, beaten.pid) == (run.host, run.pid)
    assert json.loads(json.dumps(beaten.as_dict()))["heartbeat_at"] == beaten.heartbeat_at.isoformat()
    with pytest.raises(RegistryError, match="no run 'nope'"):
        store.heartbeat("nope")
    store.finish_run(run.id, "interrupted", "killed")
    store.reopen(run.id)
    again = store.get_run(run.id)
    assert (again.status, again.failure_reason, again.ended_at) == ("running", None, None)
    assert again.heartbeat_at >= beaten.heartbeat_at
    assert store.list_runs(sweep_id="none-such") == [] and len(store.list_runs()) == 1


def test_a_locked_sqlite_write_is_retried_until_the_lock_is_free(tmp_path: Path, monkeypatch) -> None:
    """With no busy wait at all, a write that meets another process's write lock fails with
    "database is locked"; the store rolls back and runs the whole transaction again."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Store(url).close()
    pragmas = tuple(p for p in store_module.SQLITE_PRAGMAS if not p.startswith("busy_timeout")) + ("busy_timeout = 0",)
    monkeypatch.setattr(store_module, "SQLITE_PRAGMAS", pragmas)
    store = Store(url)
    run = store.create_run(**RUN_FIELDS)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sqlite3, sys, time
            db = sqlite3.connect(sys.argv[1], isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            print("locked", flush=True)
            time.sleep(1.0)
            db.execute("COMMIT")
            """), str(tmp_path / "registry.db")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    store.add_interval(run.id, step=0, domain_wer=0.5)
    waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert [i.step for i in store.get_run(run.id).intervals] == [0]
    assert waited > 0.5  # it really met the lock, and got through after it was released
    store.close()
