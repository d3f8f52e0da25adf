"""Manifest reading: path resolution, duration fill-in, every error naming its line."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from orchestrator.errors import AudioError, ManifestError
from orchestrator.manifest import Utterance, filter_by_duration, manifest_sha256, read_manifest


def _wav(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * 16000), 0.1, dtype=np.float32), 16000)
    return path


def _manifest(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    _wav(tmp_path / "wavs" / "a.wav", 0.5)
    _wav(tmp_path / "wavs" / "b.wav", 1.25)
    return tmp_path


def test_reads_resolves_and_fills_duration(data: Path, tmp_path_factory, monkeypatch) -> None:
    m = _manifest(data / "m.jsonl", [
        {"audio_filepath": "wavs/a.wav", "text": "hello there"},
        "",
        "   ",
        {"audio_filepath": str(data / "wavs" / "b.wav"), "text": "general kenobi", "duration": 9.5},
    ])
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # relative paths are not cwd-based
    utts = read_manifest(m)
    assert utts == [
        Utterance(str(data / "wavs" / "a.wav"), "hello there", 0.5, 1),
        Utterance(str(data / "wavs" / "b.wav"), "general kenobi", 9.5, 4),
    ]


def test_relative_path_falls_back_to_cwd(tmp_path: Path, monkeypatch) -> None:
    audio = _wav(tmp_path / "cwd" / "clips" / "x.wav", 0.25)
    (tmp_path / "manifests").mkdir()
    m = _manifest(tmp_path / "manifests" / "m.jsonl", [{"audio_filepath": "clips/x.wav", "text": "x"}])
    monkeypatch.chdir(tmp_path / "cwd")
    [u] = read_manifest(m)
    assert u.audio_filepath == str(audio) and u.duration == 0.25


def test_manifest_dir_wins_over_cwd(tmp_path: Path, monkeypatch) -> None:
    near = _wav(tmp_path / "m" / "x.wav", 0.5)
    _wav(tmp_path / "cwd" / "x.wav", 1.0)
    m = _manifest(tmp_path / "m" / "m.jsonl", [{"audio_filepath": "x.wav", "text": "x"}])
    monkeypatch.chdir(tmp_path / "cwd")
    [u] = read_manifest(m)
    assert u.audio_filepath == str(near) and u.duration == 0.5


GOOD = {"audio_filepath": "wavs/a.wav", "text": "fine"}


@pytest.mark.parametrize("bad, what, fix", [
    ('{"audio_filepath": "wavs/a.wav", "text": ', "malformed JSON", "one JSON object per line"),
    ('["wavs/a.wav", "text"]', "expected a JSON object", "one JSON object per line"),
    ({"text": "no audio"}, "\"audio_filepath\"", "add an \"audio_filepath\" field"),
    ({"audio_filepath": "wavs/a.wav"}, "missing \"text\"", "add a \"text\" field"),
    ({"audio_filepath": "wavs/a.wav", "text": "  \t"}, "\"text\" is empty", "transcript"),
    ({"audio_filepath": "wavs/a.wav", "text": 7}, "not a string", "transcript"),
    ({"audio_filepath": "wavs/zzz.wav", "text": "gone"}, "audio file not found: wavs/zzz.wav",
     "check the path or regenerate the manifest"),
    ({**GOOD, "duration": -1}, "positive number", "remove \"duration\""),
    ({**GOOD, "duration": "long"}, "positive number", "remove \"duration\""),
])
def test_bad_line_names_its_line(data: Path, bad, what: str, fix: str) -> None:
    m = _manifest(data / "m.jsonl", [GOOD, "", GOOD, bad, GOOD])
    with pytest.raises(ManifestError) as info:
        read_manifest(m)
    err = info.value
    assert err.where == f"{m}:4"
    assert what in err.what and fix in (err.fix or "")
    assert str(err).startswith(f"{m}:4: ")


def test_undecodable_audio_without_duration(data: Path) -> None:
    (data / "wavs" / "junk.wav").write_bytes(b"RIFF" + bytes(60))
    m = _manifest(data / "m.jsonl", [GOOD, {"audio_filepath": "wavs/junk.wav", "text": "junk"}])
    with pytest.raises(AudioError) as info:
        read_manifest(m)
    assert info.value.where == f"{m}:2"
    assert str(data / "wavs" / "junk.wav") in info.value.what


def test_invalid_utf8_names_its_line(data: Path) -> None:
    m = data / "m.jsonl"
    m.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"text": "\xff"}\n')
    with pytest.raises(ManifestError, match="UTF-8") as info:
        read_manifest(m)
    assert info.value.where == f"{m}:2"


def test_missing_and_empty_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found") as info:
        read_manifest(tmp_path / "nope.jsonl")
    assert info.value.where == str(tmp_path / "nope.jsonl")

    empty = _manifest(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(ManifestError, match="no utterances") as info:
        read_manifest(empty)
    assert info.value.where == str(empty) and info.value.fix


def test_filter_by_duration_counts() -> None:
    utts = [Utterance(f"/a/{i}.wav", "t", d, i) for i, d in enumerate([0.5, 2.0, 2.0001, 31.0], 1)]
    result = filter_by_duration(utts, 2.0)
    assert [u.line for u in result.kept] == [1, 2]
    assert result.dropped_too_long == 2
    assert filter_by_duration(utts, 100).dropped_too_long == 0


def test_manifest_sha256(data: Path) -> None:
    m = _manifest(data / "m.jsonl", [GOOD])
    assert manifest_sha256(m) == hashlib.sha256(m.read_bytes()).hexdigest()
    before = manifest_sha256(m)
    _manifest(m, [GOOD, GOOD])
    assert manifest_sha256(m) != before
    with pytest.raises(ManifestError):
        manifest_sha256(data / "missing.jsonl")
