"""manifest validate / stats / expand: every problem with its line, exact stats, a clean stable eval set."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from orchestrator.artifacts.atomic import sha256_file
from orchestrator.errors import ManifestError
from orchestrator.data.textnorm import normalize
from orchestrator.data.manifest import read_manifest, validate_manifest
from orchestrator.data.manifest_tools import allocate, expand_manifest, manifest_stats
from orchestrator.data.synth import general_sentences

from conftest import cli


def _noise(path: Path, seconds: float, seed: int, rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (int(seconds * rate), channels) if channels > 1 else int(seconds * rate)
    sf.write(path, np.random.default_rng(seed).normal(0, 0.1, shape).astype(np.float32), rate)
    return path


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


# --- validate ----------------------------------------------------------------------------------

def test_validate_lists_every_problem_with_its_line(speech, tmp_path):
    good = read_manifest(speech["train"])[:2]
    shutil.copy(good[0].audio_filepath, tmp_path / "copy.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + bytes(60))
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan] * 8000, np.float32), 16000, subtype="FLOAT")
    sf.write(tmp_path / "none.wav", np.zeros(0, np.float32), 16000)
    _noise(tmp_path / "stereo.wav", 1.0, seed=1, rate=44100, channels=2)
    real = good[0].audio_filepath
    m = _write(tmp_path / "m.jsonl", [
        {"audio_filepath": real, "text": good[0].text, "duration": good[0].duration},  # 1 fine
        {"audio_filepath": good[1].audio_filepath, "text": "x", "duration": good[1].duration + 0.5},  # 2
        '{"audio_filepath": "a.wav", "text": ',  # 3
        {"audio_filepath": "gone.wav", "text": " "},  # 4: two problems
        "",  # 5 blank: fine
        {"audio_filepath": "copy.wav", "text": "copied bytes"},  # 6
        {"audio_filepath": real, "text": "same file again"},  # 7
        {"audio_filepath": "zero.wav", "text": "z"},  # 8
        {"audio_filepath": "junk.wav", "text": "j"},  # 9
        {"audio_filepath": "silent.wav", "text": "s"},  # 10
        {"audio_filepath": "nan.wav", "text": "n"},  # 11
        {"audio_filepath": "none.wav", "text": "e"},  # 12
        {"audio_filepath": "stereo.wav", "text": "resampled and down-mixed", "duration": 1.0},  # 13: info only
        {"audio_filepath": "stereo.wav"},  # 14: missing text + duplicate
    ])
    problems = validate_manifest(m)
    found = [(p.line, p.severity, p.what) for p in problems]
    expect = [
        (2, "error", "disagrees with the audio"), (3, "error", "malformed JSON"),
        (4, "error", '"text" is empty'), (4, "error", "audio file not found: gone.wav"),
        (6, "error", "same audio content as line 1"), (7, "error", "same audio file as line 1"),
        (8, "error", "empty (0 bytes)"), (9, "error", "cannot read audio header"),
        (10, "error", "silent"), (11, "error", "NaN"), (12, "error", "no samples"),
        (13, "info", "resampled to 16000 Hz"), (13, "info", "down-mixed to mono"),
        (14, "error", 'missing "text"'), (14, "error", "same audio file as line 13"),
    ]
    assert len(found) == len(expect), found
    for (line, severity, what), (e_line, e_severity, e_what) in zip(found, expect):
        assert (line, severity) == (e_line, e_severity) and e_what in what, (line, what)
    assert all(p.fix for p in problems if p.is_error)

    proc = cli("manifest", "validate", str(m))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 2 and len(lines) == len(expect) + 1
    assert lines[0].startswith(f"{m}:2: \"duration\" ") and "(fix: " in lines[0]
    assert lines[11] == f"{m}:13: info: sample rate 44100 Hz: will be resampled to 16000 Hz"
    assert lines[-1] == f"{m}: 13 error(s), 2 info(s)"


def test_validate_clean_manifest_exits_zero(speech):
    proc = cli("manifest", "validate", str(speech["train"]))
    assert proc.returncode == 0 and proc.stdout.splitlines() == [f"{speech['train']}: 0 error(s), 0 info(s) - OK"]


# --- stats -------------------------------------------------------------------------------------

def test_stats_on_a_known_set(tmp_path):
    durations = [0.5 * k for k in range(1, 22)]  # 0.5 .. 10.5 s, 21 utterances, 115.5 s
    texts = ["Hello, world!", "don't stop - now", "one two three"] * 7  # 2, 3, 3 words after normalising
    rows = [{"audio_filepath": str(_noise(tmp_path / f"{i}.wav", d, seed=i)), "text": t}  # no "duration": from audio
            for i, (d, t) in enumerate(zip(durations, texts))]
    stats = manifest_stats(_write(tmp_path / "m.jsonl", rows))
    assert stats["utterances"] == 21 and stats["hours"] == pytest.approx(115.5 / 3600)
    s = stats["seconds"]
    assert (s["min"], s["p5"], s["p50"], s["p95"], s["max"]) == pytest.approx((0.5, 1.0, 5.5, 10.0, 10.5))
    assert s["total"] == pytest.approx(115.5) and s["mean"] == pytest.approx(5.5)
    assert stats["words"] == {"total": 56, "per_utterance": pytest.approx(56 / 21)}

    out = json.loads(cli("manifest", "stats", str(tmp_path / "m.jsonl"), "--json", check=True).stdout)
    assert out == json.loads(json.dumps(stats))
    human = cli("manifest", "stats", str(tmp_path / "m.jsonl"), check=True).stdout
    assert "p50 5.50" in human and "utterances  21" in human


# --- expand ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(speech, tmp_path_factory) -> Path:
    """Espeak speech (train, domain, heldout) + 600 noise clips of varied length with unique sentences,
    plus a copy of a training file under a new name and a training sentence re-cased on new audio."""
    tmp = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(3)
    train = read_manifest(speech["train"])
    rows = [{"audio_filepath": u.audio_filepath, "text": u.text, "speaker": "espeak"}
            for name in ("train", "domain", "heldout") for u in read_manifest(speech[name])]
    sentences = general_sentences(600, seed=99)
    for i, text in enumerate(sentences):
        seconds = float(np.clip(rng.lognormal(0.7, 0.5), 0.3, 8.0))
        rows.append({"audio_filepath": f"clips/{i:04d}.wav", "text": text, "speaker": f"s{i % 7}"})
        _noise(tmp / "clips" / f"{i:04d}.wav", seconds, seed=1000 + i, rate=8000)
    shutil.copy(train[0].audio_filepath, tmp / "clips" / "renamed.wav")
    rows.append({"audio_filepath": "clips/renamed.wav", "text": "completely fresh words"})
    _noise(tmp / "clips" / "fresh.wav", 2.0, seed=7)
    rows.append({"audio_filepath": "clips/fresh.wav", "text": train[1].text.upper() + "!"})
    return _write(tmp / "pool.jsonl", rows)


def test_expand_is_stratified_deterministic_and_disjoint_from_training(pool, speech, tmp_path):
    result = expand_manifest(pool, tmp_path / "a.jsonl", size=500, exclude=[speech["train"]], seed=0)
    assert result.selected == 500 and result.pool == 634 and result.excluded_audio == 17
    assert result.excluded_text >= 1 and result.bins == 10
    again = expand_manifest(pool, tmp_path / "b.jsonl", size=500, exclude=[speech["train"]], seed=0)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() and again == \
        result.__class__(**{**result.__dict__, "out": tmp_path / "b.jsonl"})
    expand_manifest(pool, tmp_path / "c.jsonl", size=500, exclude=[speech["train"]], seed=1)
    assert (tmp_path / "c.jsonl").read_bytes() != (tmp_path / "a.jsonl").read_bytes()

    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert all(Path(r["audio_filepath"]).is_absolute() and "speaker" in r and r["duration"] > 0 for r in rows)
    train = read_manifest(speech["train"])
    train_hashes = {sha256_file(Path(u.audio_filepath)) for u in train}
    train_texts = {normalize(u.text) for u in train}
    picked = read_manifest(tmp_path / "a.jsonl")
    assert not {sha256_file(Path(u.audio_filepath)) for u in picked} & train_hashes
    assert not {normalize(u.text) for u in picked} & train_texts
    assert len({u.audio_filepath for u in picked}) == 500

    eligible = [u.duration for u in read_manifest(pool)
                if sha256_file(Path(u.audio_filepath)) not in train_hashes and normalize(u.text) not in train_texts]
    assert np.median([u.duration for u in picked]) == pytest.approx(np.median(eligible), rel=0.15)
    p10, p90 = np.percentile(eligible, [10, 90])
    share = lambda ds, lo, hi: np.mean((np.array(ds) >= lo) & (np.array(ds) <= hi))  # noqa: E731
    assert share([u.duration for u in picked], p10, p90) == pytest.approx(share(eligible, p10, p90), abs=0.03)


def test_expand_refuses_a_pool_too_small_and_the_cli_writes(pool, speech, tmp_path):
    eligible = expand_manifest(pool, tmp_path / "one.jsonl", size=1, exclude=[speech["train"]]).eligible
    assert 600 <= eligible <= 634 - 17 - 1  # at least the re-cased training sentence goes
    with pytest.raises(ManifestError, match=rf"only {eligible} eligible utterances, --size 1000 requested"):
        expand_manifest(pool, tmp_path / "x.jsonl", size=1000, exclude=[speech["train"]])
    assert not (tmp_path / "x.jsonl").exists()

    proc = cli("manifest", "expand", "--pool", str(pool), "--out", str(tmp_path / "cli.jsonl"),
               "--exclude", str(speech["train"]), "--size", str(eligible), "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{tmp_path / 'cli.jsonl'}: {eligible} utterances from {eligible} eligible of 634")
    assert len((tmp_path / "cli.jsonl").read_text().splitlines()) == eligible

    proc = cli("manifest", "expand", "--pool", str(pool), "--out", str(tmp_path / "y.jsonl"), "--size", "5000")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "fix: lower --size" in err[0]
    assert "only 633 eligible" in err[0] and "1 duplicate audio" in err[0]  # renamed.wav: train audio, kept once


def test_allocate_is_proportional_and_exact():
    assert allocate(np.array([10, 10, 10]), 10).tolist() == [4, 3, 3]
    assert allocate(np.array([50, 30, 20]), 10).tolist() == [5, 3, 2]
    assert allocate(np.array([1, 1, 98]), 50).sum() == 50
