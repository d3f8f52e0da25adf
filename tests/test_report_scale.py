"""The report at scale: the lean registry read judges and renders exactly as the full read, the
verdict matrix past VERDICT_RUNS runs, `report --run`, and what a report no longer loads
(alembic on a registry at head, numpy without per-utterance data). bench/report_scale.py
times it on 10,000 runs."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BACKENDS, ROOT, cli, registry_url
from orchestrator.artifacts.atomic import sha256_file
from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS
from orchestrator.registry import Store
from orchestrator.registry.store import HEAD_REVISION, JUDGED_FIELDS
from orchestrator.report import (INTERVAL_RUNS, VERDICT_RUNS, collect, run_matrix, sweep_sections, update_experiments_md, verdict_sections, write_report)
from orchestrator.acceptance.bootstrap import loss_trend
from orchestrator.acceptance.verdicts import TITLES
from orchestrator.config.criteria import CriteriaConf

from test_report import cells, make_run, table_lines

UTTERANCES, WORDS = 40, 5


def utterances(errors: list[int]) -> list[dict]:
    return [dict(audio_filepath=f"u{i}.wav", reference=" ".join(["w"] * WORDS), hypothesis="h",
                 errors=e, ref_words=WORDS) for i, e in enumerate(errors)]


def add_run(store: Store, run_id: str, points: list[tuple], *, sweep_id: str | None = None, lr: float = 1e-4,
            status: str | None = "completed", with_utterances: bool = False, best_file: Path | None = None) -> None:
    """A run with intervals (step, train_loss, eval_loss, domain_wer, heldout_wer) - any may be None
    but the step - and, optionally, per-utterance errors matching its WERs and a best adapter on disk."""
    store.create_run(experiment=run_id.split("-")[0], config={"optim": {"lr": lr}}, config_hash=run_id,
                     model_id="m", targets=["q"], target_summary="q", lr=lr, steps=points[-1][0], dora=False,
                     git_commit=None, run_id=run_id, criteria=CriteriaConf().as_dict(), sweep_id=sweep_id,
                     target_report={"identity_errors": 0, "skipped": []})
    rng = random.Random(run_id)
    for step, train_loss, eval_loss, domain, heldout in points:
        split_errors = {}
        if with_utterances:  # errors summing to the interval's WER
            for split, wer in (("domain", domain), ("heldout", heldout)):
                total = round(wer * UTTERANCES * WORDS)
                errors = [0] * UTTERANCES
                for i in rng.sample(range(UTTERANCES * WORDS), total):
                    errors[i // WORDS] += 1
                split_errors[split] = utterances(errors)
        store.add_interval(run_id, step=step, lr=lr, train_loss=train_loss, eval_loss=eval_loss, domain_wer=domain,
                           heldout_wer=heldout, domain_utts=UTTERANCES, heldout_utts=UTTERANCES,
                           utterances=split_errors or None)
    if best_file is not None:
        best_file.parent.mkdir(parents=True, exist_ok=True)
        best_file.write_bytes(run_id.encode())
        store.add_artifact(run_id, kind="lora_adapter_best", path=str(best_file.parent),
                           sha256=sha256_file(best_file), step=points[-1][0])
        store.add_check(run_id, "parity", True, {"step": points[-1][0]})
    if status is not None:
        store.finish_run(run_id, status)


def fill(store: Store, tmp_path: Path, extra: int = 0) -> None:
    """Runs that exercise every criterion: paired bootstrap, gaps in the metrics, an external
    run, one still training, a sweep; then `extra` plain runs."""
    add_run(store, "full-a", [(0, None, 2.0, 0.40, 0.10), (10, 1.5, 1.6, 0.26, 0.10), (20, 1.2, 1.4, 0.26, 0.10),
                              (30, 1.1, 1.3, 0.255, 0.10)], with_utterances=True, best_file=tmp_path / "outputs" / "full-a" / "best" / ADAPTER_WEIGHTS)
    add_run(store, "gaps-b", [(0, None, None, 0.40, None), (10, 1.5, 1.6, None, 0.10), (20, None, 1.7, 0.35, 0.12),
                              (30, 1.1, None, 0.36, 0.13)], status="failed")
    store.record_external(experiment="ext", model_id="m", steps=100, lr=1e-4, target_summary="q", dora=False,
                          intervals=[{"step": 0, "domain_wer": 0.4, "heldout_wer": 0.1},
                                     {"step": 100, "domain_wer": 0.3, "heldout_wer": 0.1}],
                          criteria=CriteriaConf().as_dict(), run_id="ext-c")
    add_run(store, "live-d", [(0, None, 2.0, 0.40, 0.10), (10, 1.5, 1.8, 0.39, 0.10)], status=None)
    for k, lr in enumerate((1e-4, 3e-4)):
        add_run(store, f"sweep-{k}", [(0, None, 2.0, 0.40, 0.10), (10, 1.0, 1.5, 0.30 + k / 10, 0.10 + k / 100)],
                sweep_id="sweep-s", lr=lr)
    for k in range(extra):
        add_run(store, f"plain-{k:02d}", [(0, None, 2.0, 0.40, 0.10), (10, 1.4, 1.5, 0.33, 0.10),
                                          (20, 1.3, 1.45 + k / 100, 0.32, 0.105)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lean_read_judges_and_renders_as_the_full_read(backend: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path) -> None:
    store = Store(registry_url(backend, request, tmp_path))
    fill(store, tmp_path)
    full, lean = store.list_runs(), store.list_runs(lean=True)
    assert [r.id for r in full] == [r.id for r in lean]
    assert full == [store.get_run(r.id) for r in full]  # the set-based read and the ORM one agree
    judged = {key[0] for key in store.utterance_errors_many((r.id, i.step) for r in full for i in r.intervals)}
    for f, l in zip(full, lean):  # the judged fields are read, the others are left out
        assert [tuple(getattr(i, name) for name in JUDGED_FIELDS) for i in f.intervals] == \
               [tuple(getattr(i, name) for name in JUDGED_FIELDS) for i in l.intervals]
        assert all(i.lr is i.train_loss is i.domain_utts is i.created_at is None for i in l.intervals)
        assert (l.targets, l.data_stats) == ([], f.data_stats if f.id in judged else {})  # speakers live there
        assert l.config == (f.config if f.sweep_id or f.status == "running" or f.id in judged else {})
        left_out = ("intervals", "config", "targets", "data_stats")
        assert dataclasses.replace(f, **{name: getattr(l, name) for name in left_out}) == l  # all else read
    assert {r.id for r in lean if r.config} == {"live-d", "sweep-0", "sweep-1"} | {r.id for r in full if r.config and r.id in judged}

    judged = [collect(runs, utterances=store, root=tmp_path) for runs in (full, lean)]
    store.close()
    summaries = [{run_id: summary(v) for run_id, v in data.verdicts.items()} for data in judged]
    assert summaries[0] == summaries[1]
    statuses = {run_id: [c[1] for c in s["criteria"]] for run_id, s in summaries[0].items()}
    # stability: independent errors per interval on 40 utterances cannot show a range <= 0.5
    assert statuses["full-a"] == ["PASS", "INCONCLUSIVE", "PASS", "INCONCLUSIVE", "PASS", "PASS", "PASS"]
    assert summaries[0]["full-a"]["comparisons"]["domain"][-1] == \
        "max-type band over 3 intervals (picked on this set), 10000 replicates, n=40"
    assert statuses["gaps-b"] == ["INCONCLUSIVE", "N/A", "FAIL", "N/A", "PASS", "FAIL", "FAIL"]
    assert statuses["ext-c"] == ["PASS", "PASS", "N/A", "N/A", "N/A", "N/A", "N/A"]
    for render in (run_matrix, sweep_sections, verdict_sections):
        assert render(judged[0]) == render(judged[1])


def summary(verdict) -> dict:
    """A RunVerdict as plain values; the tuned interval by its step (lean intervals lack fields)."""
    selection = verdict.selection
    return {"overall": verdict.overall, "reason": verdict.reason,
            "selection": selection and (selection.interval.step, selection.within_guard, selection.regression),
            "criteria": [(v.name, v.status, v.value, v.detail, v.threshold) for v in verdict.criteria],
            "comparisons": {k: (c.baseline_wer, c.tuned_wer, c.delta, c.ci_low, c.ci_high, c.p_improvement, c.note)
                            for k, c in verdict.comparisons.items()}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_report_writes_what_the_full_read_writes(backend: str, request: pytest.FixtureRequest,
                                                       tmp_path: Path) -> None:
    """Past INTERVAL_RUNS runs, write_report reads the recent runs in full for their interval
    tables: the file is byte for byte what judging the full read gives."""
    store = Store(registry_url(backend, request, tmp_path))
    fill(store, tmp_path, extra=INTERVAL_RUNS)
    lean, full = tmp_path / "lean.md", tmp_path / "full.md"
    assert write_report(store, lean, experiments=["planned_x"], root=tmp_path) == INTERVAL_RUNS + 6
    update_experiments_md(full, store.list_runs(), experiments=["planned_x"], utterances=store, root=tmp_path)
    store.close()
    assert lean.read_bytes() == full.read_bytes()
    text = lean.read_text()
    last = text.split("### plain-24")[-1].split("<!-- END GENERATED: intervals -->")[0]
    assert [cells(line)[:3] for line in table_lines(last)][2:] == [  # LR and train loss, read in full
        ["0", "0.0001", "—"], ["10", "0.0001", "1.4000"], ["20", "0.0001", "1.3000"]]


def test_a_verdict_matrix_and_the_most_recent_sections_past_verdict_runs() -> None:
    runs = [make_run(f"exp_a-{i:03d}") for i in range(VERDICT_RUNS + 3)]
    runs[-1] = make_run(f"exp_a-{VERDICT_RUNS + 2:03d}", status="running")
    text = verdict_sections(runs)
    note, matrix, *sections = text.split("\n\n")
    assert f"the {VERDICT_RUNS} most recent of {VERDICT_RUNS + 3} runs" in note
    assert "orchestrator report --run RUN_ID" in note
    header, _rule, *rows = [cells(line) for line in table_lines(matrix)]
    assert header == ["Run ID", "Overall", *TITLES.values()]
    assert [row[0] for row in rows] == [run.id for run in runs]  # every run, oldest first
    assert rows[0][1:] == ["FAIL", "INCONCLUSIVE", "FAIL", "FAIL", "N/A", "N/A", "FAIL", "FAIL"]
    assert rows[-1][1] == "pending"
    headings = [s for s in sections if s.startswith("### ")]
    assert headings[0].startswith("### exp_a-003") and len(headings) == VERDICT_RUNS
    assert "### exp_a-002" not in text


def test_up_to_verdict_runs_the_block_is_one_section_per_run() -> None:
    runs = [make_run(f"exp_a-{i:03d}") for i in range(VERDICT_RUNS)]
    text = verdict_sections(runs)
    assert text.startswith("### exp_a-000\n") and "most recent" not in text
    assert text.count("\n### ") == VERDICT_RUNS - 1


def test_report_run_prints_a_runs_section(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = Store(url)
    add_run(store, "exp_a-1", [(0, None, 2.0, 0.40, 0.10), (10, 1.5, 1.6, 0.30, 0.10)])
    store.close()
    done = cli("report", "--registry", url, "--run", "exp_a-1", check=True)
    assert done.stdout.startswith("### exp_a-1\n\n- **Overall: FAIL**")
    assert "| 2 | Heldout WER regression" in done.stdout and not (tmp_path / "EXPERIMENTS.md").exists()
    missing = cli("report", "--registry", url, "--run", "nope")
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr and "Traceback" not in missing.stderr


def test_a_report_loads_neither_alembic_nor_numpy_when_it_needs_neither(tmp_path: Path) -> None:
    """A registry at head opens without alembic; runs without per-utterance data are judged
    without numpy: both are most of a report's start (bench/cold_start.py). Nor matplotlib (and
    its numpy) when the curves are unchanged: the second report here, after the first drew them."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = Store(url)
    add_run(store, "exp_a-1", [(0, None, 2.0, 0.40, 0.10), (10, 1.5, 1.6, 0.30, 0.10)])
    store.close()
    code = ("import json, sys\nfrom orchestrator.cli import main\n"
            f"main(['report', '--registry', {url!r}, '--output', {str(tmp_path / 'E.md')!r}])\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'numpy', 'torch', "
            "'matplotlib'})))")
    cli("report", "--registry", url, "--output", str(tmp_path / "E.md"), check=True)  # draws the curves
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
    assert "exp_a-1" in (tmp_path / "E.md").read_text()


def test_a_read_sees_one_snapshot_on_postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """list_runs cuts the interval rows by per-run counts read in a separate query: the two must
    see the same data, so a read-only transaction is REPEATABLE READ there (SQLite's deferred
    transaction in WAL mode reads one snapshot as it is)."""
    from sqlalchemy import func, select

    store = Store(registry_url("postgresql", request, tmp_path))
    level = select(func.current_setting("transaction_isolation"))
    try:
        assert store._transact(lambda session: session.scalar(level), read_only=True) == "repeatable read"
        assert store._transact(lambda session: session.scalar(level)) == "read committed"  # writes as before
    finally:
        store.close()


def test_reads_unpack_the_columns_of_the_tables_in_the_entities_order() -> None:
    """Store._runs unpacks rows by position: RUN_COLUMNS are the columns of `runs` in Run's
    field order, and the artifacts' and checks' those of Artifact and Check."""
    from orchestrator.registry import Artifact, Check, Run
    from orchestrator.registry.models import SqlArtifact, SqlCheck, SqlRun
    from orchestrator.registry.store import ARTIFACT_COLUMNS, CHECK_COLUMNS, RUN_COLUMNS

    children = {"intervals", "artifacts", "checks"}
    assert RUN_COLUMNS == tuple(f.name for f in dataclasses.fields(Run) if f.name not in children)
    # but interval_writes, the registry's own count of interval writes, which only the report's digest reads
    assert set(RUN_COLUMNS) | {"interval_writes"} == set(SqlRun.__table__.columns.keys())
    for entity, model, names in ((Artifact, SqlArtifact, ARTIFACT_COLUMNS), (Check, SqlCheck, CHECK_COLUMNS)):
        assert names == tuple(f.name for f in dataclasses.fields(entity))
        assert set(names) | {"run_id"} == set(model.__table__.columns.keys())


def test_naive_timestamps_read_as_utc_exactly_as_replace_would() -> None:
    from datetime import datetime, timedelta, timezone

    from orchestrator.registry.store import _utc

    rng = random.Random(0)
    moments = [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(1970, 1, 1)]
    moments += [datetime(1, 1, 1) + timedelta(microseconds=rng.randrange(315_537_897_600_000_000)) for _ in range(1000)]
    for moment in moments:
        converted, expected = _utc(moment), moment.replace(tzinfo=timezone.utc)
        assert (converted, repr(converted), converted.tzinfo) == (expected, repr(expected), timezone.utc)
    aware = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert _utc(aware) is aware


def test_the_head_revision_is_alembics_head() -> None:
    from orchestrator.registry.store import _revisions

    assert HEAD_REVISION == _revisions()[1]


def test_loss_trend_is_polyfits_slope_to_rounding() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(2, 60))
        steps = rng.permutation(np.arange(n) * 20).tolist()
        losses = rng.uniform(0.5, 2.0, n).tolist()
        trend = loss_trend(steps, losses)
        order = np.argsort(steps, kind="stable")
        expected = np.polyfit(np.asarray(steps, float)[order], np.asarray(losses)[order], 1)[0]
        assert trend.slope == pytest.approx(expected, rel=1e-9, abs=1e-15)
        assert f"{trend.slope:.3g}" == f"{expected:.3g}"  # what the report prints
        assert (trend.first, trend.last) == (losses[order[0]], losses[order[-1]])
    assert loss_trend([0, 20, 40], [1.5, 1.5, 1.5]).slope == 0.0  # polyfit: -2e-19 or so


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_stored_rows_read_as_sqlalchemy_reads_them(backend: str, request: pytest.FixtureRequest,
                                                       tmp_path: Path) -> None:
    """report_runs reads SQLite's rows from the DBAPI cursor and converts them itself (timestamps,
    JSON, booleans): exactly SQLAlchemy's values, column by column, for every column of runs,
    artifacts and checks (another database: SQLAlchemy's own rows)."""
    from sqlalchemy import select

    from orchestrator.registry.models import SqlArtifact, SqlCheck, SqlRun
    from orchestrator.registry.reads import _run_columns, _stored_children, _stored_rows
    from orchestrator.registry.rows import _utc
    from orchestrator.registry.store import ARTIFACT_COLUMNS, CHECK_COLUMNS

    store = Store(registry_url(backend, request, tmp_path))
    fill(store, tmp_path)
    run = store.create_run(experiment="dora-e", config={"optim": {"seed": 1}, "x": [1.5, None, "é"]},
                           config_hash="h", model_id="m", targets=["a"], target_summary="a (1)", lr=1e-4,
                           steps=20, dora=True, git_commit=None, data_stats={"train": {"utterances": 3}})
    store.progress(run.id, step=5, phase="train", loss=0.5, seconds_left=12.5)
    store.annotate(run.id, "flawed", "a note")
    table = SqlRun.__table__
    for query in (select(*_run_columns(True), table.c.interval_writes), select(*_run_columns(False))):
        expected = store._transact(lambda session: [tuple(r) for r in session.connection().execute(query).all()],
                                   read_only=True)
        stored, read = store._transact(lambda session: _stored_rows(session.connection(), query), read_only=True)
        assert sorted((tuple(read(row)) for row in stored), key=repr) == sorted(expected, key=repr)
        assert any(isinstance(v, bool) and v for row in expected for v in row)  # dora=True was read, as a bool
    for model, names in ((SqlArtifact, ARTIFACT_COLUMNS), (SqlCheck, CHECK_COLUMNS)):
        grouped, read = store._transact(lambda session: _stored_children(session.connection(), model, names),
                                        read_only=True)
        got = {run_id: [read(row) for row in rows] for run_id, rows in grouped.items()}
        want = {r.id: [tuple(getattr(x, n) for n in names) for x in (r.artifacts if model is SqlArtifact else r.checks)]
                for r in store.list_runs() if (r.artifacts if model is SqlArtifact else r.checks)}
        assert {k: [tuple(_utc(v) if hasattr(v, "tzinfo") else v for v in row) for row in rows]
                for k, rows in got.items()} == want
    store.close()
