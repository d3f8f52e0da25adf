"""The run folder's one layout and the one atomic file write."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.artifacts.atomic import atomic_write, write_text_atomic
from orchestrator.artifacts.run_folder import ADAPTER_KINDS, BEST_ADAPTER, RunFolder, audio_cache_dir
from orchestrator.errors import WriteError

ROOT = Path(__file__).resolve().parent.parent


def test_a_run_folder_names_every_path_of_a_run(tmp_path: Path) -> None:
    folder = RunFolder(str(tmp_path / "outputs"), "exp-1")
    run = tmp_path / "outputs" / "exp-1"
    assert (folder.path, folder.config, folder.checkpoint, folder.lock) == (
        run, run / "config.yaml", run / "checkpoint.pt", run / ".lock")
    assert (folder.best_adapter, folder.last_adapter, folder.merged) == (
        run / "lora_adapter_best", run / "lora_adapter_last", run / "merged_model")
    assert folder.audio_cache == audio_cache_dir(tmp_path / "outputs") == tmp_path / "outputs" / ".audio_cache"
    assert RunFolder.at(run) == folder == RunFolder.of_adapter(folder.artifact(BEST_ADAPTER))
    assert ADAPTER_KINDS == ("lora_adapter_best", "lora_adapter_last")


def test_the_layout_and_the_atomic_write_import_nothing_heavy() -> None:
    code = ("import sys, orchestrator.artifacts.run_folder, orchestrator.artifacts.atomic; "
            "print(sorted(m for m in ('torch', 'numpy', 'sqlalchemy', 'hydra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"


def test_a_write_that_fails_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    atomic_write(path, lambda fh: fh.write(b"first"))
    os.chmod(path, 0o640)

    def half(fh) -> None:
        fh.write(b"half of the sec")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half)
    assert path.read_bytes() == b"first" and os.listdir(tmp_path) == ["state.bin"]
    atomic_write(path, lambda fh: fh.write(b"second"))
    assert path.read_bytes() == b"second" and (path.stat().st_mode & 0o777) == 0o640  # its mode kept

    blocked = tmp_path / "config.yaml"
    blocked.mkdir()  # a folder where the file should go: the rename fails for real (as root too)
    with pytest.raises(WriteError) as info:
        write_text_atomic(blocked, "a: 2\n")
    assert info.value.where == str(blocked) and info.value.what.startswith("cannot write config.yaml (")
    assert blocked.is_dir() and sorted(os.listdir(tmp_path)) == ["config.yaml", "state.bin"]
