"""Cold start of the commands that must not load torch: `orchestrator report --help` (target
<= 1.5 s), `orchestrator --help` and `orchestrator runs`, each in a fresh interpreter.

Each command is run through the console script's code path (`python -m orchestrator`, which
calls the same `cli.main`) with `-X importtime`; the import log proves whether torch or
transformers was imported. The ratio is time / 1.5 s.

    .venv/bin/python -m bench.cold_start
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CACHE, ROOT, Result

TARGET_S = 1.5
HEAVY = ("torch", "transformers", "peft")


def cold(args: list[str], repeats: int) -> tuple[float, list[str], subprocess.CompletedProcess]:
    """Best wall time of `repeats` fresh interpreters, and the heavy modules the last one imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - started)
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    imported = {line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines()
                if line.startswith("import time:")}
    return min(times), sorted(m for m in imported if m in HEAVY), proc


def measure(repeats: int = 5) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        registry = Path(tmp) / "registry.db"
        from orchestrator.registry import Store

        Store(f"sqlite:///{registry}").close()  # an empty registry at alembic head
        commands = {
            "orchestrator report --help": (["report", "--help"], TARGET_S),
            "orchestrator --help": (["--help"], None),
            "orchestrator runs (empty registry)": (["runs", "--registry", f"sqlite:///{registry}"], None),
            "orchestrator report (empty registry)": (["report", "--registry", f"sqlite:///{registry}",
                                                      "--output", str(Path(tmp) / "EXPERIMENTS.md")], None),
        }
        for name, (args, target) in commands.items():
            best, heavy, proc = cold(args, repeats)
            note = f"best of {repeats}; " + (f"imported {', '.join(heavy)}!" if heavy else "torch not imported")
            if proc.returncode != 0:  # still timed, but said: a command that fails is not a cold start
                lines = proc.stderr.strip().splitlines() or [""]
                note += f"; EXITED {proc.returncode}: {lines[-1][:160]}"
            ratio = None if target is None else (best / target if proc.returncode == 0 else float("inf"))
            results.append(Result(f"cold start: {name}", best, target, ratio,
                                  None if target is None else "<= 1", note=note))
            if heavy:  # a failure whatever the time: these commands must never load torch
                results.append(Result(f"cold start: {name}: heavy modules imported", len(heavy), None,
                                      len(heavy), "<= 0", unit="modules", note=", ".join(heavy)))
    return results


def main(argv=None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    results = measure(args.repeats)
    for r in results:
        print(r.line())
    return results


if __name__ == "__main__":
    main()
