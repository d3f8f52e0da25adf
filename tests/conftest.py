"""Session fixtures: real espeak-ng speech and a real tiny Moonshine v2 checkpoint, built once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> dict[str, Path]:
    """train / domain / heldout manifests of espeak-ng speech (16 kHz mono WAV)."""
    from orchestrator.synth import make_test_set

    return make_test_set(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from orchestrator.modeling import build_tiny_random

    return build_tiny_random(tmp_path_factory.mktemp("ckpt") / "tiny_random")


@pytest.fixture
def run_overrides(speech, tiny_checkpoint, tmp_path) -> list[str]:
    """Overrides for a few-step real run on tiny_random, writing only under tmp_path."""
    return ["+exp=smoke_tiny_random", f"model.id={tiny_checkpoint}",
            f"data.train_manifest={speech['train']}", f"eval.domain_manifest={speech['domain']}",
            f"eval.heldout_manifest={speech['heldout']}", f"registry.url=sqlite:///{tmp_path / 'registry.db'}",
            f"output_dir={tmp_path / 'outputs'}", "optim.steps=4", "eval.interval=2", "model.tokens_per_second=5"]


def cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m orchestrator ARGS` as a user would; returns the finished process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
