"""`orchestrator report` on a synthetic registry of 10,000 runs x 50 intervals.

The registry is created by the Store (alembic schema) and filled through the registry's own
SQLAlchemy tables with bulk Core inserts; it is cached in bench/.cache/ under a name that
hashes the table definitions, so a schema change builds a new one (each measurement works on a
copy of it: its rounds add intervals). The timed command is the real CLI in a fresh interpreter,
as a user runs it: `orchestrator report --registry URL --output F`.

What is timed is the steady state of a researcher re-running the report after a few runs
changed: before each timed report, RECENT_CHANGES runs get a new interval (runs of the older
part of the registry: a change to one of the 25 most recent also redraws its curves, matplotlib,
with or without the cache). The report keeps what unchanged runs rendered to in
experiments/.report_cache.json (orchestrator/report/cache.py) and reads and judges only the
changed runs and the 25 most recent; each timed report must say it judged exactly the changed
runs anew, and the last one's file must be byte for byte what `--no-cache` writes. Untimed
for the target, printed beside it: the first report (no cache yet: it judges every run, draws
the 25 detailed runs' curves and writes the cache) and `--no-cache` reports (every run judged,
as before the cache: what a first report costs without the drawing), best of as many.
Each run's CPU time (user + sys of the child) is reported beside its wall time, and the load
average: on a shared machine wall time also counts the other processes' share of the cores.
Bytecode: the project is byte-compiled first, as scripts/setup.sh does (an editable install is
not, and where PYTHONDONTWRITEBYTECODE is set Python never caches it: every module of orchestrator/
would be compiled from source at each start). Each timed round also runs the same report with
orchestrator's __pycache__ folders moved aside and nothing written (PYTHONDONTWRITEBYTECODE=1),
side by side, and prints that ratio (no target).
With --profile, the same report runs in-process under cProfile and the top functions are printed.

    .venv/bin/python -m bench.report_scale [--runs 10000] [--intervals 50] [--profile]
"""
from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import random
import re
import resource
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.common import CACHE, ROOT, Result, run_cli

TARGET_S = 1.5
RECENT_CHANGES = 10  # runs that get a new interval before each timed report


def schema_fingerprint() -> str:
    from sqlalchemy.schema import CreateIndex, CreateTable

    from orchestrator.registry.models import Base

    ddl = "".join(str(CreateTable(t)) + "".join(sorted(str(CreateIndex(i)) for i in t.indexes))
                  for t in Base.metadata.sorted_tables)
    return hashlib.sha256(ddl.encode()).hexdigest()[:12]


def registry(runs: int, intervals: int) -> Path:
    """The cached synthetic registry file (built on first use)."""
    path = CACHE / f"registry-{runs}x{intervals}-{schema_fingerprint()}.db"
    if not path.exists():
        tmp = path.with_suffix(".tmp.db")
        tmp.unlink(missing_ok=True)
        started = time.perf_counter()
        build(tmp, runs, intervals)
        tmp.rename(path)
        print(f"  built {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def _config(lr: float, experiment: str) -> dict:
    return {"experiment": experiment, "model": {"name": "moonshine_streaming_tiny",
                                                "id": "UsefulSensors/moonshine-streaming-tiny"},
            "adapter": {"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
            "optim": {"lr": lr, "steps": 1000, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.1, "seed": 42},
            "data": {"train_manifest": "data/train_manifest_expanded.jsonl", "max_seconds": 20.0,
                     "rms_target": 0.075, "sample_rate": 16000, "batching": "buckets"},
            "eval": {"interval": 20, "domain_manifest": "data/domain_manifest.jsonl",
                     "heldout_manifest": "data/heldout_manifest.jsonl", "batch_size": 16}}


def build(path: Path, n_runs: int, n_intervals: int) -> None:
    from sqlalchemy import insert

    from orchestrator.config.paths import DEFAULT_CRITERIA, declared_experiments
    from orchestrator.registry import Store
    from orchestrator.registry.models import SqlArtifact, SqlCheck, SqlInterval, SqlRun
    from orchestrator.config.criteria import load_criteria

    store = Store(f"sqlite:///{path}")  # the real schema, at alembic head
    engine = store._engine
    rng = random.Random(0)
    experiments = declared_experiments() + [f"exp_9_{i}_synthetic" for i in range(40)]
    criteria = load_criteria(DEFAULT_CRITERIA).as_dict()
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    runs, intervals, artifacts, checks = [], [], [], []
    for i in range(n_runs):
        experiment = rng.choice(experiments)
        lr = rng.choice([5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4])
        run_id = f"{experiment}-{i:05d}"
        began = start + timedelta(minutes=7 * i)
        status = rng.choices(["completed", "failed", "interrupted"], [90, 7, 3])[0]
        runs.append(dict(
            id=run_id, experiment=experiment, status=status, config=_config(lr, experiment),
            config_hash=hashlib.sha256(run_id.encode()).hexdigest(),
            model_id="UsefulSensors/moonshine-streaming-tiny",
            targets=[f"model.decoder.layers.{k}.self_attn.{p}_proj" for k in range(6) for p in "qkvo"],
            target_summary="decoder: 24 (q_proj, k_proj, v_proj, o_proj)", lr=lr, steps=n_intervals * 20,
            dora=rng.random() < 0.2, git_commit="0" * 40,
            data_stats={"train": {"utterances": 500, "dropped_too_long": 0}}, started_at=began,
            ended_at=began + timedelta(minutes=6), failure_reason="non-finite loss" if status == "failed" else None,
            external=False, criteria=criteria, interval_writes=n_intervals, sweep_id=f"{experiment}-sweep-{i // 5}" if i % 3 == 0 else None))
        domain, heldout = rng.uniform(0.1, 0.3), rng.uniform(0.04, 0.1)
        for k in range(n_intervals):
            intervals.append(dict(run_id=run_id, step=20 * k, lr=lr,
                                  train_loss=None if k == 0 else rng.uniform(0.5, 2), eval_loss=rng.uniform(0.5, 2),
                                  domain_wer=domain, heldout_wer=heldout,
                                  domain_utts=500, heldout_utts=500, created_at=began + timedelta(seconds=k)))
            domain = max(0.0, domain + rng.gauss(-0.002, 0.004))
            heldout = max(0.0, heldout + rng.gauss(0.0002, 0.002))
        artifacts += [dict(run_id=run_id, kind=kind, path=f"outputs/{run_id}/{kind}", sha256="0" * 64,
                           step=20 * (n_intervals - 1), created_at=began)
                      for kind in ("lora_adapter_best", "lora_adapter_last")]
        checks.append(dict(run_id=run_id, name="parity", passed=True, details={}, created_at=began))
    with engine.begin() as connection:  # bulk Core inserts through the registry's own tables
        for table, rows in ((SqlRun.__table__, runs), (SqlInterval.__table__, intervals),
                            (SqlArtifact.__table__, artifacts), (SqlCheck.__table__, checks)):
            for s in range(0, len(rows), 50_000):
                connection.execute(insert(table), rows[s:s + 50_000])
    store.close()


def profile(db: Path, out: Path, top: int = 25) -> None:
    import cProfile
    import pstats

    from orchestrator.cli import main

    profiler = cProfile.Profile()
    profiler.runcall(main, ["report", "--registry", f"sqlite:///{db}", "--output", str(out)])
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def _timed(*args: str, env: dict | None = None) -> tuple[float, float, str]:
    """(wall, CPU) seconds of one CLI run in a fresh interpreter, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = run_cli(*args, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"orchestrator {' '.join(args)} failed:\n{proc.stderr}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, proc.stdout


PACKAGE = ROOT / "orchestrator"


@contextmanager
def _without_bytecode():
    """orchestrator's __pycache__ folders moved aside for the duration (and put back): each module
    is compiled from source, as where PYTHONDONTWRITEBYTECODE is set and nothing byte-compiled it."""
    moved = []
    try:
        for cache in sorted(PACKAGE.rglob("__pycache__")):
            aside = cache.with_name(f"__pycache__.aside-{os.getpid()}")
            cache.rename(aside)
            moved.append((aside, cache))
        yield {"PYTHONDONTWRITEBYTECODE": "1"}
    finally:
        for aside, cache in moved:
            shutil.rmtree(cache, ignore_errors=True)  # none: nothing may write one meanwhile
            aside.rename(cache)


def _change(url: str, round_: int, intervals: int) -> list[str]:
    """Give RECENT_CHANGES runs of the older part of the registry one more interval each."""
    from sqlalchemy import select

    from orchestrator.registry import Store
    from orchestrator.registry.models import SqlRun

    store = Store(url)
    try:
        by_start = select(SqlRun.id).order_by(SqlRun.started_at)  # the ids only: no run is read
        ids = store._transact(lambda session: list(session.scalars(by_start)), read_only=True)
        chosen = random.Random(round_).sample(ids[:-100], RECENT_CHANGES)
        for run_id in chosen:
            store.add_interval(run_id, step=20 * (intervals + round_), lr=1e-4, train_loss=0.9, eval_loss=0.8,
                               domain_wer=0.12, heldout_wer=0.06, domain_utts=500, heldout_utts=500)
    finally:
        store.close()
    return chosen


def measure(runs: int = 10_000, intervals: int = 50, *, repeats: int = 3, with_profile: bool = False) -> list[Result]:
    cached = registry(runs, intervals)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        db = Path(tmp) / "registry.db"
        shutil.copyfile(cached, db)  # the rounds add intervals: never to the cached registry
        url = f"sqlite:///{db}"
        out, cold = Path(tmp) / "EXPERIMENTS.md", Path(tmp) / "COLD.md"  # one folder: the curves are shared
        first = _timed("report", "--registry", url, "--output", str(out))  # draws the curves, writes the cache
        uncached = [_timed("report", "--registry", url, "--output", str(cold), "--no-cache")[:2]
                    for _ in range(repeats)]
        compileall.compile_dir(PACKAGE, quiet=1)  # as scripts/setup.sh
        times: list[tuple[float, float]] = []  # (wall, CPU) seconds
        compiled: list[tuple[float, float]] = []  # the same report with no bytecode of orchestrator's
        while len(times) < repeats:  # each a fresh interpreter; the file is rewritten in place each time
            for kept in (True, False):  # side by side: with the bytecode setup.sh writes, then without
                _change(url, len(times) + len(compiled) + 1, intervals)
                if kept:
                    wall, cpu, stdout = _timed("report", "--registry", url, "--output", str(out))
                else:
                    with _without_bytecode() as env:
                        wall, cpu, stdout = _timed("report", "--registry", url, "--output", str(out), env=env)
                (times if kept else compiled).append((wall, cpu))
                anew = re.search(r"\((\d+) judged anew", stdout)
                if anew is None or int(anew.group(1)) != RECENT_CHANGES:
                    raise RuntimeError(f"the report judged other runs anew than the {RECENT_CHANGES} changed: {stdout}")
            if times[-1][0] > 5 * TARGET_S:  # far off the target: one run says enough
                break
        _timed("report", "--registry", url, "--output", str(cold), "--no-cache")
        if out.read_bytes() != cold.read_bytes():
            raise RuntimeError("the report with the cache differs from the report without it")
        size = out.stat().st_size
        cache_size = (Path(tmp) / "experiments" / ".report_cache.json").stat().st_size
        if with_profile:
            profile(db, out)
    best = min(wall for wall, _ in times)
    best_uncached = min(wall for wall, _ in uncached)
    best_source = min(wall for wall, _ in compiled)

    def listed(pairs: list[tuple[float, float]]) -> str:
        return ", ".join(f"{wall:.2f} wall / {cpu:.2f} CPU" for wall, cpu in pairs)

    note = (f"best of {len(times)} cold CLI runs, each after {RECENT_CHANGES} runs got a new interval and judging "
            f"exactly those anew ({listed(times)} s); ratio = time / {TARGET_S:g} s; load average {load}; "
            f"EXPERIMENTS.md {size / 1e6:.1f} MB, byte for byte the --no-cache one; cache {cache_size / 1e6:.1f} MB. "
            f"Without the cache (--no-cache, every run judged): {listed(uncached)} s; the first report "
            f"(no cache yet, drawing 25 runs' curves, writing the cache): {first[0]:.2f} wall / {first[1]:.2f} CPU s")
    return [Result(f"orchestrator report ({runs:,} runs x {intervals} intervals, {RECENT_CHANGES} changed)", best,
                   TARGET_S, best / TARGET_S, "<= 1", note=note),
            Result(f"orchestrator report ({runs:,} runs x {intervals} intervals, {RECENT_CHANGES} changed): "
                   "byte-compiled / compiled from source at start", best, best_source, best / best_source,
                   None, note=f"best of {len(compiled)} cold CLI runs each, in turns ({listed(compiled)} s from source); "
                   "scripts/setup.sh byte-compiles the project, which an editable install does not, and with "
                   "PYTHONDONTWRITEBYTECODE set Python never writes it"),
            Result(f"orchestrator report --no-cache ({runs:,} runs x {intervals} intervals)", best_uncached, None,
                   None, None, note="every run judged anew, as before the cache (no target: the first report)")]


def main(argv=None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--intervals", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="also profile one report in-process")
    args = parser.parse_args(argv)
    results = measure(args.runs, args.intervals, with_profile=args.profile)
    for r in results:
        print(r.line())
    return results


if __name__ == "__main__":
    main()
