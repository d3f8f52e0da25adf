"""The decoded-audio cache: bit-identical to load_audio, reused, keyed by content, crash-safe."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from orchestrator.artifacts.atomic import sha256_file
from orchestrator.data.audio import load_audio
from orchestrator.data.audio_cache import AudioCache
from orchestrator.data.batching import AudioBank, model_inputs
from orchestrator.data.manifest import read_manifest
from orchestrator.training.modeling import char_tokenizer, streaming_processor
from orchestrator.config.schema import DataConf

from conftest import ROOT


@pytest.fixture(scope="module")
def files(speech) -> list[str]:
    return [u.audio_filepath for u in read_manifest(speech["train"])]


def _entries(root: Path) -> dict[str, tuple[int, int]]:
    """Every file in the cache folder with its inode and modification time."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir()} if root.exists() else {}


def _npy(root: Path) -> Path:
    (npy,) = root.glob("pack-*.npy")
    return npy


@pytest.mark.parametrize("rate, rms", [(16000, 0.075), (8000, None)])  # as is, and resampled unnormalised
def test_cached_audio_is_bit_identical_to_load_audio(files, tmp_path, rate, rms):
    cache = AudioCache(tmp_path, sample_rate=rate, rms_target=rms)
    for waves in (cache.load(files), cache.load(files)):  # as written, then as read back
        for path in files:
            expected = load_audio(path, sample_rate=rate, rms_target=rms)
            assert waves[path].dtype == expected.dtype and waves[path].tobytes() == expected.tobytes()


def test_model_inputs_from_the_cache_equal_the_in_memory_bank(files, speech, tmp_path):
    utts = read_manifest(speech["train"])[:6]
    processor = streaming_processor(char_tokenizer())
    cached = AudioBank(DataConf(), cache_dir=tmp_path)
    cached.prepare(files)
    a = model_inputs(processor, cached, utts, "cpu")
    b = model_inputs(processor, AudioBank(DataConf()), utts, "cpu")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_second_run_reads_the_entry_without_decoding(files, tmp_path):
    first = AudioBank(DataConf(), cache_dir=tmp_path)
    first.prepare(files)
    written = _entries(tmp_path)
    assert sorted(Path(n).suffix for n in written) == [".json", ".npy"]  # one entry, nothing else left

    again = AudioBank(DataConf(), cache_dir=tmp_path)  # a new run: a new bank, same cache folder
    again.prepare(files)
    assert _entries(tmp_path) == written  # nothing decoded: no file written, replaced or added
    hashed = AudioBank(DataConf(), cache_dir=tmp_path, digests={p: sha256_file(Path(p)) for p in files[:3]})
    hashed.prepare(files)  # digests known from manifest.load_split name the same entry
    assert _entries(tmp_path) == written  # nothing decoded: no file written, replaced or added
    wave = again[files[3]]
    mapped = wave
    while not isinstance(mapped, np.memmap):  # a read-only view of the memory-mapped entry
        mapped = mapped.base
    assert not wave.flags.writeable and Path(mapped.filename) == _npy(tmp_path)


def test_key_follows_content_and_settings_not_names(files, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    a = shutil.copy(files[0], audio / "a.wav")
    b = shutil.copy(files[1], audio / "b.wav")
    cache = AudioCache(tmp_path / "cache", sample_rate=16000, rms_target=0.075)

    def packs():
        return sorted(p.name for p in (tmp_path / "cache").glob("*.npy"))

    cache.load([a, b])
    (original,) = packs()
    shutil.copy(a, audio / "renamed.wav")
    cache.load([str(audio / "renamed.wav"), b])  # same content under another name: same entry
    assert packs() == [original]

    data, rate = sf.read(a, dtype="int16")
    data[100] += 1  # one sample of one file changes
    sf.write(a, data, rate, subtype="PCM_16")
    cache.load([a, b])
    assert len(packs()) == 2
    AudioCache(tmp_path / "cache", sample_rate=16000, rms_target=0.05).load([a, b])
    AudioCache(tmp_path / "cache", sample_rate=8000, rms_target=0.075).load([a, b])
    assert len(packs()) == 4


WRITER = """
import sys
from orchestrator.data.audio_cache import AudioCache
paths = sys.argv[2:]
waves = AudioCache(sys.argv[1], sample_rate=16000, rms_target=0.075).load(paths)
print(sum(waves[p].size for p in paths))
"""


def test_concurrent_writers_leave_one_sound_entry(files, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), *files], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert len(_entries(tmp_path)) == 2  # one .npy + one .json: no temporary file left behind
    waves = AudioCache(tmp_path, sample_rate=16000, rms_target=0.075).load(files)
    assert all(waves[p].tobytes() == load_audio(p).tobytes() for p in files)


def _truncate(npy: Path, index: Path) -> None:
    with open(npy, "r+b") as fh:
        fh.truncate(npy.stat().st_size - 400)


def _flip_a_byte(npy: Path, index: Path) -> None:
    with open(npy, "r+b") as fh:
        fh.seek(npy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x40]))


def _kill_between_renames(npy: Path, index: Path) -> None:  # the .npy is in place, its index is not
    index.unlink()


def _garbage_index(npy: Path, index: Path) -> None:
    index.write_text("{not json")


def _wrong_shape(npy: Path, index: Path) -> None:
    meta = json.loads(index.read_text())
    meta["offsets"][-1] += 1
    index.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _kill_between_renames, _garbage_index, _wrong_shape])
def test_damaged_entry_is_detected_and_rebuilt(files, tmp_path, damage):
    cache = AudioCache(tmp_path, sample_rate=16000, rms_target=0.075)
    cache.load(files[:5])
    npy = _npy(tmp_path)
    damage(npy, npy.with_suffix(".json"))
    waves = cache.load(files[:5])
    assert all(waves[p].tobytes() == load_audio(p).tobytes() for p in files[:5])
    rebuilt = _entries(tmp_path)
    assert len(rebuilt) == 2
    cache.load(files[:5])
    assert _entries(tmp_path) == rebuilt  # the rebuilt entry is sound: read as is
