"""Run every benchmark, print each ratio against its target, write bench/RESULTS.md.

    .venv/bin/python -m bench                 # all of them (about 15 min on 2 CPU cores)
    .venv/bin/python -m bench --only evaluation train_step
    .venv/bin/python -m bench --quick         # a smoke test of the scripts: small sizes, no RESULTS.md

Generated inputs (speech, models, the synthetic registry) are cached in bench/.cache/.
Sections other scripts add to RESULTS.md (`## Against moonshine-voice[lora]`, by `python -m
bench.upstream`, which needs its own venv) are kept as they are.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import CACHE, Result, machine

BENCHES = ("cold_start", "report_scale", "evaluation", "eval_cache", "train_step", "hot_path", "tune_vs_grid", "gpu")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def run(name: str, quick: bool) -> list[Result]:
    if name == "cold_start":
        from bench import cold_start

        return cold_start.measure(repeats=2 if quick else 5)
    if name == "report_scale":
        from bench import report_scale

        return report_scale.measure(500, 50, repeats=1) if quick else report_scale.measure()
    if name == "evaluation":
        from bench import evaluation

        return evaluation.measure(48 if quick else 500)
    if name == "train_step":
        from bench import train_step

        out = []
        for key in train_step.CPU_SETTINGS:
            setting = train_step.SETTINGS[key]
            steps, rounds = train_step.QUICK[key] if quick else (setting.steps, setting.rounds)
            out += train_step.measure(setting, steps=steps, rounds=rounds)
        return out
    if name == "eval_cache":
        from bench import eval_cache

        return eval_cache.measure(limit=32 if quick else None)
    if name == "hot_path":
        from bench import hot_path

        return hot_path.measure(steps=3, rounds=1) if quick else hot_path.measure()
    if name == "tune_vs_grid":
        from bench import tune_vs_grid

        return tune_vs_grid.measure()  # tiny_random: about 2 min (its compute is counted, not timed)
    from bench import gpu

    return gpu.measure(quick=quick)


def _cell(x: float | None, unit: str) -> str:
    return "—" if x is None else f"{x:.4g} {unit}"


def table_rows(results: list[Result]) -> list[str]:
    """The Markdown table of `results`, one row each (also bench/gpu.py's section)."""
    rows = ["| Benchmark | Ours | Alternative | Ratio | Target | Result | How |", "|---|---|---|---|---|---|---|"]
    for r in results:
        verdict = {True: "pass", False: "**miss**", None: "—"}[r.passed]
        ratio = "—" if r.ratio is None else f"{r.ratio:.3f}"
        rows.append(f"| {r.benchmark} | {_cell(r.ours, r.unit)} | {_cell(r.alternative, r.unit)} | {ratio} | "
                    f"{r.target or '—'} | {verdict} | {r.note} |")
    return rows


def write_results(results: list[Result], info: dict[str, str], started: datetime, minutes: float,
                  note: str | None) -> None:
    rows = table_rows(results)
    lines = [
        "# Benchmark results",
        "",
        "Written by `.venv/bin/python -m bench` (see bench/__main__.py); every ratio is measured side by "
        "side in one run, on the same model, data and batch size. Targets: issue #7.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min in all",
        *[f"- {k[0].upper() + k[1:]}: {v}" for k, v in info.items()],
        *([f"- Note: {note}"] if note else []),
        "",
        *rows,
        "",
    ]
    RESULTS.write_text("\n".join(lines) + kept_sections())


def kept_sections() -> str:
    """The `## ` sections other scripts keep in RESULTS.md (bench.upstream's), carried over as they
    are: this script rewrites only the head and its own table."""
    if not RESULTS.exists():
        return ""
    text = RESULTS.read_text()
    start = text.find("\n## ")
    return "" if start < 0 else "\n" + text[start + 1:].rstrip("\n") + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes; RESULTS.md is not written")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for the model benchmarks (default: %(default)s: on a "
                             "shared 2-core machine two threads spin against other processes)")
    parser.add_argument("--note", help="a line for RESULTS.md, e.g. what else the machine was running")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    info = machine()
    results: list[Result] = []
    for name in args.only:
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        out = run(name, args.quick)
        for r in out:
            print(r.line(), flush=True)
        print(f"   ({time.perf_counter() - t:.0f} s)", flush=True)
        results += out
    minutes = (time.perf_counter() - clock) / 60
    info["load average (1, 5, 15 min) at end"] = machine()["load average (1, 5, 15 min) at start"]

    print("\n== summary")
    for r in results:
        print(r.line())
    missed = [r for r in results if r.passed is False]
    print(f"{sum(r.passed is True for r in results)} targets met, {len(missed)} missed ({minutes:.1f} min)")
    if not args.quick:
        write_results(results, info, started, minutes, args.note)
        print(f"wrote {RESULTS}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
