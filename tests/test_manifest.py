"""Manifest reading: path resolution, duration fill-in, every error naming its line."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from orchestrator.errors import AudioError, ManifestError
from orchestrator.data.manifest import Utterance, filter_by_duration, manifest_sha256, read_manifest


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


# --- load_split: what a run reads ---------------------------------------------------------------

from orchestrator.data.manifest import load_split, overlap  # noqa: E402


def _audio(path: Path, x: np.ndarray, rate: int = 16000, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)
    return path


def _tone(seconds: float, rate: int = 16000, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    _audio(tmp_path / "a.wav", _tone(0.5))
    _audio(tmp_path / "b.wav", _tone(0.75, freq=500))
    _audio(tmp_path / "silent.wav", np.zeros(8000, np.float32))
    _audio(tmp_path / "stereo44k.wav", np.stack([_tone(1.0, 44100), _tone(1.0, 44100, 700)], axis=1), 44100)
    _audio(tmp_path / "long.wav", _tone(3.0, freq=200))
    return tmp_path


def test_load_split_counts_silent_converted_and_long(clips: Path) -> None:
    m = _manifest(clips / "m.jsonl", [
        {"audio_filepath": "a.wav", "text": "a"}, {"audio_filepath": "silent.wav", "text": "hush"},
        {"audio_filepath": "stereo44k.wav", "text": "two channels", "duration": 1.0},
        {"audio_filepath": "long.wav", "text": "too long"}, {"audio_filepath": "b.wav", "text": "b"}])
    part = load_split(m, max_seconds=2.0, on_silent="skip")
    assert [u.line for u in part.kept] == [1, 3, 5]
    assert (part.skipped_silent, part.resampled, part.downmixed, part.dropped_too_long) == (1, 1, 1, 1)
    assert part.counts() == {"utterances": 3, "dropped_too_long": 1, "skipped_silent": 1, "resampled": 1,
                             "downmixed": 1}
    assert set(part.sha256) == {u.audio_filepath for u in part.kept}

    with pytest.raises(AudioError) as info:
        load_split(m, max_seconds=2.0, on_silent="refuse", silent_fix="set data.on_silent=skip")
    assert info.value.where == f"{m}:2" and "all silent (RMS 0)" in info.value.what
    assert info.value.fix == "set data.on_silent=skip"


@pytest.mark.parametrize("lines, line, what", [
    ([{"audio_filepath": "a.wav", "text": "x"}, {"audio_filepath": "a.wav", "text": "y"}], 2,
     "duplicate: same audio file as line 1"),
    ([{"audio_filepath": "a.wav", "text": "x"}, {"audio_filepath": "copy.wav", "text": "x"}], 2,
     "same audio content as line 1"),
    ([{"audio_filepath": "a.wav", "text": "x"}, {"audio_filepath": "b.wav", "text": "y", "duration": 0.6}], 2,
     "\"duration\" 0.6 s disagrees with the audio (0.750 s) by more than 0.1 s"),
    ([{"audio_filepath": "a.wav", "text": "?!"}], 1, "has no words once normalised"),
    ([{"audio_filepath": "a.wav", "text": "x"}, {"audio_filepath": "nan.wav", "text": "y"}], 2, "NaN"),
])
def test_load_split_refuses_naming_the_line(clips: Path, lines, line: int, what: str) -> None:
    (clips / "copy.wav").write_bytes((clips / "a.wav").read_bytes())
    x = _tone(0.2)
    x[7] = np.nan
    _audio(clips / "nan.wav", x, subtype="FLOAT")
    m = _manifest(clips / "m.jsonl", lines)
    with pytest.raises(ManifestError) as info:
        load_split(m, max_seconds=20)
    assert info.value.where == f"{m}:{line}" and what in info.value.what and info.value.fix


def test_duration_within_tolerance_is_accepted(clips: Path) -> None:
    m = _manifest(clips / "m.jsonl", [{"audio_filepath": "b.wav", "text": "b", "duration": 0.8}])
    assert load_split(m, max_seconds=20).kept[0].duration == 0.8


def test_nothing_usable_is_one_error(clips: Path) -> None:
    m = _manifest(clips / "m.jsonl", [{"audio_filepath": "silent.wav", "text": "s"},
                                      {"audio_filepath": "long.wav", "text": "l"}])
    with pytest.raises(ManifestError, match="no usable utterance: 1 all-silent skipped, 1 over max_seconds=2 dropped"):
        load_split(m, max_seconds=2, on_silent="skip")


def test_overlap_counts_same_audio_then_same_text(clips: Path) -> None:
    (clips / "copy.wav").write_bytes((clips / "b.wav").read_bytes())
    train = load_split(_manifest(clips / "t.jsonl", [{"audio_filepath": "a.wav", "text": "Cleared to land."},
                                                       {"audio_filepath": "b.wav", "text": "b"}]), max_seconds=20)
    other = load_split(_manifest(clips / "e.jsonl", [
        {"audio_filepath": "copy.wav", "text": "renamed copy"},  # same bytes
        {"audio_filepath": "stereo44k.wav", "text": "cleared to land", "duration": 1.0},  # same words
        {"audio_filepath": "long.wav", "text": "new"}]), max_seconds=20)
    shared = overlap(train, other)
    assert (shared.same_audio, shared.same_text, shared.total) == (1, 1, 3) and shared
    assert not overlap(train, load_split(_manifest(clips / "n.jsonl", [{"audio_filepath": "long.wav", "text": "z"}]),
                                         max_seconds=20))


def test_deep_json_and_directory_manifest_are_one_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ManifestError, match="malformed JSON") as info:
        read_manifest(deep)
    assert info.value.where == f"{deep}:1"
    with pytest.raises(ManifestError, match="is a directory"):
        read_manifest(tmp_path)
