"""The report cache (orchestrator/report/cache.py): a report that keeps the pieces of unchanged
runs writes byte for byte what a report without it writes, and each kind of change renders
anew exactly the runs it touched. Real registries (SQLite, and PostgreSQL for the main test),
real Store, real files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import BACKENDS, cli, registry_url
from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS
from orchestrator.config.criteria import CriteriaConf
from orchestrator.registry import Store
from orchestrator.report import INTERVAL_RUNS, write_report
from orchestrator.report import cache as report_cache
from orchestrator.report.cache import ReportCache, code_version
from orchestrator.report.pieces import Pieces

from test_report_scale import add_run, fill, utterances

POINTS = [(0, None, 2.0, 0.40, 0.10), (10, 1.4, 1.5, 0.33, 0.10), (20, 1.3, 1.45, 0.32, 0.105)]


def seeded(store: Store, run_id: str, seed: int) -> None:
    """A completed run of a replication group (config differing only in optim.seed), with
    per-utterance errors (its config is read: it groups seeds)."""
    store.create_run(experiment="rep", config={"optim": {"lr": 1e-4, "seed": seed}}, config_hash=run_id, model_id="m",
                     targets=["q"], target_summary="q", lr=1e-4, steps=20, dora=False, git_commit=None,
                     run_id=run_id, criteria=CriteriaConf().as_dict())
    for step, domain in ((0, 0.4), (10, 0.3), (20, 0.28 + seed / 100)):
        evaluated(store, run_id, step, domain)
    store.finish_run(run_id, "completed")


def evaluated(store: Store, run_id: str, step: int, domain: float) -> None:
    """An interval with per-utterance errors matching its WERs (40 utterances of 5 words)."""
    errors = [0] * 40
    for i in range(round(domain * 200)):
        errors[i % 40] += 1
    store.add_interval(run_id, step=step, eval_loss=1.0, domain_wer=domain, heldout_wer=0.1,
                       utterances={"domain": utterances(errors), "heldout": utterances([0] * 20 + [1] * 20)})


class Reports:
    """Reports of one registry into one folder: `warm()` with the cache, checked against a report
    without it (same folder: the curves are shared, so neither redraws them)."""

    def __init__(self, store: Store, folder: Path):
        self.store, self.folder = store, folder
        self.warm_md, self.cold_md = folder / "EXPERIMENTS.md", folder / "COLD.md"

    def warm(self) -> dict[str, set[tuple[str, ...]]]:
        """Report with the cache; asserts it equals the report without; returns the runs of
        each piece rendered anew, by kind."""
        cache = ReportCache.beside(self.warm_md)
        count = write_report(self.store, self.warm_md, experiments=["planned_x"], root=self.folder, cache=cache)
        write_report(self.store, self.cold_md, experiments=["planned_x"], root=self.folder)
        assert self.warm_md.read_bytes() == self.cold_md.read_bytes()
        assert count == len(self.store.list_runs(lean=True))
        return {kind: set(runs) for kind, runs in cache.pieces.rendered.items()}

    def anew(self) -> set[str]:
        """The runs whose run-matrix row was rendered anew."""
        return {ids[0] for ids in self.warm().get("matrix", ())}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_warm_report_is_the_cold_one_and_each_change_renders_its_runs_anew(backend: str, request: pytest.FixtureRequest,
                                                                             tmp_path: Path) -> None:
    store = Store(registry_url(backend, request, tmp_path))
    fill(store, tmp_path)  # full-a (per-utterance data, adapter on disk), gaps-b, ext-c, live-d (running), sweep-0/1
    seeded(store, "rep-0", 0), seeded(store, "rep-1", 1)
    for k in range(2):
        add_run(store, f"tune-{k}", POINTS, sweep_id="tune-study")
    for k in range(INTERVAL_RUNS + 2):  # the most recent: always read (interval tables, curves, sections)
        add_run(store, f"plain-{k:02d}", POINTS)
    reports = Reports(store, tmp_path)
    everyone = {run.id for run in store.list_runs(lean=True)}

    assert reports.anew() == everyone  # the first report renders every piece, and keeps them
    assert (tmp_path / "experiments" / ".report_cache.json").is_file()
    assert reports.anew() == {"live-d"}  # nothing changed; a running run is never kept (liveness)

    store.add_interval("plain-00", step=30, eval_loss=1.4, domain_wer=0.31, heldout_wer=0.1)  # a new interval
    assert reports.anew() == {"live-d", "plain-00"}
    store.add_interval("plain-00", step=30, eval_loss=1.4, domain_wer=0.50, heldout_wer=0.1)  # one replaced
    assert reports.anew() == {"live-d", "plain-00"}
    store.finish_run("live-d", "completed")  # running -> completed: kept from now on
    assert reports.anew() == {"live-d"}
    assert reports.anew() == set()
    store.annotate("gaps-b", "flawed", "bad data")
    assert reports.anew() == {"gaps-b"}
    store.add_check("full-a", "parity", False, {"step": 30})  # a changed check
    assert reports.anew() == {"full-a"}

    adapter = tmp_path / "outputs" / "full-a" / "best" / ADAPTER_WEIGHTS
    before = reports.cold_md.read_text()
    adapter.write_bytes(b"other weights")  # the artifact check hashes the file: a stat change renders anew
    assert reports.anew() == {"full-a"}
    assert reports.cold_md.read_text() != before  # its verdict matrix row: artifact integrity FAIL
    adapter.unlink()
    assert reports.anew() == {"full-a"}
    store.add_artifact("gaps-b", kind="lora_adapter_best", path="elsewhere", sha256="0" * 64, step=30)
    assert reports.anew() == {"gaps-b"}

    store.add_interval("sweep-0", step=20, eval_loss=1.4, domain_wer=0.2, heldout_wer=0.1)
    pieces = reports.warm()
    assert pieces["matrix"] == {("sweep-0",)} and pieces["sweep"] == {("sweep-0", "sweep-1")}
    evaluated(store, "rep-1", 30, 0.25)
    pieces = reports.warm()
    assert pieces["matrix"] == {("rep-1",)} and pieces["group"] == {("rep-0", "rep-1")}
    assert "#### Replication groups" in reports.cold_md.read_text()
    store.add_check("tune-1", "tune", True, {"study": "tune-study", "trial": 0, "budget_runs": 2})
    pieces = reports.warm()
    assert pieces["matrix"] == {("tune-1",)} and pieces["tune"] == {("tune-1", "tune-0")}
    assert reports.warm() == {}
    store.close()


def test_another_context_or_a_damaged_or_foreign_file_renders_everything_anew(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    for k in range(INTERVAL_RUNS + 3):
        add_run(store, f"plain-{k:02d}", POINTS)
    reports = Reports(store, tmp_path)
    everyone = {f"plain-{k:02d}" for k in range(INTERVAL_RUNS + 3)}
    assert reports.anew() == everyone and reports.anew() == set()
    path = tmp_path / "experiments" / ".report_cache.json"
    good = path.read_bytes()

    for damaged in (good[:-100], good.replace(b'"PASS"', b'"FAIL"', 1) + b" ", b"not json\n{}", b"", b"[1, 2]\n3",
                    good.split(b"\n", 1)[0] + b"\n" + b"{}"):
        path.write_bytes(damaged)
        assert reports.anew() == everyone  # ignored, and written anew
        assert path.read_bytes() == good
    path.unlink()
    assert reports.anew() == everyone and reports.anew() == set()

    monkeypatch.setattr(report_cache, "code_version", lambda: "another version of the report code")
    assert reports.anew() == everyone and reports.anew() == set()
    monkeypatch.undo()
    cache = ReportCache.beside(reports.warm_md)  # other default criteria: another context
    write_report(store, reports.warm_md, criteria=CriteriaConf(min_domain_reduction=0.5), root=tmp_path, cache=cache)
    assert cache.rendered() == len(everyone)
    store.close()


def test_the_code_version_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "orchestrator"
    shutil.copytree(report_cache._ORCHESTRATOR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_version()
    monkeypatch.setattr(report_cache, "_ORCHESTRATOR", copy)
    assert code_version() == before
    judge = copy / "acceptance" / "judge.py"
    judge.write_text(judge.read_text() + "\n# changed\n")
    assert code_version() != before


def test_per_utterance_data_appearing_renders_every_run_anew(tmp_path: Path) -> None:
    """Whether any run has per-utterance data decides how every run is judged (a point estimate
    without any): the first run to bring some makes every kept piece stale."""
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    for k in range(INTERVAL_RUNS + 2):
        add_run(store, f"plain-{k:02d}", POINTS)
    reports = Reports(store, tmp_path)
    reports.anew()
    assert reports.anew() == set()
    add_run(store, "zz-with-data", POINTS, with_utterances=True)
    assert reports.anew() == {run.id for run in store.list_runs(lean=True)}
    assert reports.anew() == set()
    store.close()


def test_a_piece_of_runs_read_without_intervals_is_refused() -> None:
    from factories import make_run

    run = make_run("exp_a-1")
    pieces = Pieces({run.id: "d"}, {})
    with pytest.raises(RuntimeError, match="read without their intervals"):
        pieces.get("matrix", [run], lambda: ["row"])
    pieces.loaded = {run.id}
    assert pieces.get("matrix", [run], lambda: ["row"]) == ["row"] and pieces.used == {"matrix": {"d": ["row"]}}
    assert Pieces({run.id: "d"}, pieces.used).get("matrix", [run], lambda: ["other"]) == ["row"]


def test_the_cli_keeps_pieces_and_no_cache_bypasses_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = Store(url)
    add_run(store, "exp_a-1", POINTS)
    add_run(store, "exp_a-2", POINTS)
    store.close()
    out = tmp_path / "E.md"
    first = cli("report", "--registry", url, "--output", str(out), check=True).stdout
    assert "2 runs (2 judged anew, 0 kept in" in first
    path = tmp_path / "experiments" / ".report_cache.json"
    held = path.read_bytes()
    second = cli("report", "--registry", url, "--output", str(out), check=True).stdout
    assert "2 runs (0 judged anew, 2 kept in" in second
    warm = out.read_bytes()
    path.write_bytes(b"damaged")
    done = cli("report", "--registry", url, "--output", str(out), "--no-cache", check=True).stdout
    assert done.strip() == f"{out}: 2 runs" and out.read_bytes() == warm
    assert path.read_bytes() == b"damaged"  # neither read nor written
    assert "2 runs (2 judged anew" in cli("report", "--registry", url, "--output", str(out), check=True).stdout
    assert path.read_bytes() == held and out.read_bytes() == warm
