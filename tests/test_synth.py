"""Synthetic speech: deterministic unique text, real espeak-ng audio, the fixed test set."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from orchestrator.data.audio import audio_info, load_audio
from orchestrator.errors import OrchestratorError
from orchestrator.data.manifest import read_manifest
from orchestrator.data.synth import atc_sentences, general_sentences, main, spell_number, synthesize, write_manifest

ATC_WORDS = {"runway", "heading", "flight", "contact", "squawk", "knots", "altimeter", "feet"}


@pytest.mark.parametrize("gen", [general_sentences, atc_sentences])
def test_generators_deterministic_and_unique(gen) -> None:
    a = gen(3000, seed=7)
    assert a == gen(3000, seed=7)
    assert len(set(a)) == 3000
    assert gen(50, seed=8) != a[:50]
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", s) for s in a)  # lowercase words, no digits


def test_general_sentences_shape() -> None:
    lengths = [len(s.split()) for s in general_sentences(2000, seed=1)]
    assert min(lengths) >= 4 and max(lengths) <= 12
    assert len(set(lengths)) >= 6  # varied, not one template


def test_atc_sentences_are_phraseology() -> None:
    sents = atc_sentences(500, seed=1)
    assert all(ATC_WORDS & set(s.split()) for s in sents)
    assert any("niner" in s.split() for s in sents)
    assert any(s.startswith("speedbird ") for s in sents)


def test_spell_number() -> None:
    assert [spell_number(n) for n in (0, 13, 40, 99, 105, 720)] == [
        "zero", "thirteen", "forty", "ninety nine", "one hundred and five",
        "seven hundred and twenty"]


@pytest.fixture(scope="module")
def test_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("test_set")
    main(["--out", str(out), "--jobs", "2"])
    return out


def test_test_set_layout_and_no_leak(test_set: Path) -> None:
    sets = {name: read_manifest(test_set / f"{name}.jsonl") for name in ("train", "domain", "heldout")}
    assert {k: len(v) for k, v in sets.items()} == {"train": 16, "domain": 8, "heldout": 8}
    texts = {k: {u.text for u in v} for k, v in sets.items()}
    assert not texts["train"] & (texts["domain"] | texts["heldout"])
    assert all(ATC_WORDS & set(t.split()) for t in texts["domain"])
    assert sum(bool(ATC_WORDS & set(t.split())) for t in texts["train"]) == 8


def test_test_set_audio_is_real_speech(test_set: Path) -> None:
    for u in read_manifest(test_set / "train.jsonl")[:4] + read_manifest(test_set / "domain.jsonl")[:2]:
        info = sf.info(u.audio_filepath)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert u.duration == pytest.approx(audio_info(u.audio_filepath)[0], abs=1e-3)
        assert u.duration > 0.3
        raw = load_audio(u.audio_filepath, rms_target=None)
        assert float(np.sqrt(np.mean(raw.astype(np.float64) ** 2))) > 0.01


def test_synthesize_is_idempotent_and_deterministic(tmp_path: Path) -> None:
    sents = ["please put the red lamp in the kitchen", "speedbird four two seven squawk one two"]
    rows = synthesize(sents, tmp_path / "a", prefix="x", jobs=2)
    wavs = [tmp_path / "a" / r["audio_filepath"] for r in rows]
    stamps = [w.stat().st_mtime_ns for w in wavs]
    assert synthesize(sents, tmp_path / "a", prefix="x", jobs=2) == rows
    assert [w.stat().st_mtime_ns for w in wavs] == stamps  # not re-rendered
    again = synthesize(sents, tmp_path / "b", prefix="x", jobs=1)
    assert [(tmp_path / "b" / r["audio_filepath"]).read_bytes() for r in again] == \
        [w.read_bytes() for w in wavs]
    assert not [p for p in (tmp_path / "a" / "wavs").iterdir() if p.name.startswith(".")]


def test_voice_and_speed_vary_per_sentence(tmp_path: Path) -> None:
    rows = synthesize(["cleared for takeoff"] * 6, tmp_path, prefix="v", voice=["en-us", "en-gb"],
                      speed=(120, 200), seed=3)
    assert len({r["duration"] for r in rows}) > 1
    assert rows == synthesize(["cleared for takeoff"] * 6, tmp_path, prefix="v",
                              voice=["en-us", "en-gb"], speed=(120, 200), seed=3)


def test_unknown_voice_is_reported(tmp_path: Path) -> None:
    with pytest.raises(OrchestratorError, match="espeak-ng --voices"):
        synthesize(["hello"], tmp_path, prefix="bad", voice="xx-nosuchvoice")


def test_write_manifest_round_trip(tmp_path: Path) -> None:
    rows = synthesize(["where is my green blanket"], tmp_path, prefix="w")
    path = write_manifest(rows, tmp_path / "m.jsonl")
    [u] = read_manifest(path)
    assert u.text == "where is my green blanket" and u.duration == rows[0]["duration"]


def test_demo_sets_are_disjoint_and_large_enough() -> None:
    from orchestrator.data.synth import DEMO_SETS, DOMAIN_VOICE, GENERAL_VOICES, check_disjoint, demo_sentences

    sets = demo_sentences()
    assert len(sets["domain_eval"]) >= 500 and len(sets["heldout"]) >= 1500
    assert len(sets["domain_train"]) >= 500 and len(sets["pretrain"]) >= 10_000
    assert len(sets["domain_dev"]) >= 300
    assert (len(sets["accent_eval"]), len(sets["accent_train"]), len(sets["accent_dev"])) == (600, 800, 300)
    assert len(sets["accent_eval_extra"]) == 1800 and len(sets["heldout_extra"]) == 4500
    all_sentences = [s for group in sets.values() for s in group]
    assert len(all_sentences) == len(set(all_sentences))  # no sentence in two sets
    assert DOMAIN_VOICE not in GENERAL_VOICES  # the domain's voice is never heard in pretraining
    assert {voices for _, voices, _, _ in DEMO_SETS.values()} == {GENERAL_VOICES, (DOMAIN_VOICE,)}
    assert sum(w in ATC_WORDS for s in sets["domain_eval"] for w in s.split()) > 500
    with pytest.raises(ValueError, match="1 sentences are in both a and b"):
        check_disjoint({"a": ["x", "y"], "b": ["y", "z"]})


def test_demo_set_renders_through_the_same_path(tmp_path: Path, monkeypatch) -> None:
    """make_demo_set on a cut-down pool: every manifest is real speech, audio files unshared."""
    import orchestrator.data.synth as synth

    monkeypatch.setattr(synth, "DEMO_GENERAL", {"heldout": ((0, 2), (9, 10)), "replay": ((2, 5),),
                                                "pretrain": ((5, 9),), "accent_eval": ((10, 11),),
                                                "accent_train": ((11, 12),), "accent_dev": ((12, 13),),
                                                "heldout_extra": ((13, 14),), "replay_extra": ((14, 15),),
                                                "accent_eval_extra": ((15, 16),)})
    monkeypatch.setattr(synth, "DEMO_ATC", {"domain_eval": ((0, 3),), "domain_train": ((3, 6),), "pretrain": ((6, 8),),
                                            "domain_dev": ((8, 9),)})
    paths = synth.make_demo_set(tmp_path)
    assert sorted(paths) == ["accent_dev", "accent_eval", "accent_eval_2400", "accent_eval_extra",
                             "accent_train", "domain_dev", "domain_eval", "domain_train", "heldout", "heldout_3000",
                             "heldout_6000", "heldout_extra", "replay", "replay_2000", "replay_extra"]
    for union, parts in synth.DEMO_UNIONS.items():  # a union of sets: no audio of its own
        audio = [u.audio_filepath for u in read_manifest(paths.pop(union))]
        parts = [(p, None) if isinstance(p, str) else p for p in parts]
        assert audio == [u.audio_filepath for name, n in parts for u in read_manifest(paths[name])[:n]]
    audio = [u.audio_filepath for p in paths.values() for u in read_manifest(p)]
    assert len(audio) == 19 and len(set(audio)) == 19
    # a set made of two ranges takes both, in order: the second after the pretraining slice
    general = synth.general_sentences(10, synth.DEMO_SEED)
    assert [u.text for u in read_manifest(paths["heldout"])] == general[0:2] + general[9:10]
    assert all(audio_info(a)[1] == 16000 for a in audio)


def test_the_campaign_renders_only_its_sets_and_their_prefixes_are_the_full_sets_files(tmp_path: Path, monkeypatch) -> None:
    """--set campaign: the first n of a set are the files the whole set has (prefix-stable), a set
    cut short gets no manifest of its own, and a union of what was rendered gets its manifest."""
    import orchestrator.data.synth as synth

    monkeypatch.setattr(synth, "DEMO_GENERAL", {"heldout": ((0, 2),), "heldout_extra": ((2, 5),), "replay": ((5, 6),),
                                                "pretrain": ((6, 7),)})
    monkeypatch.setattr(synth, "DEMO_ATC", {"domain_eval": ((0, 1),), "pretrain": ((1, 2),)})
    monkeypatch.setattr(synth, "DEMO_UNIONS", {"heldout_3": ("heldout", ("heldout_extra", 1)),
                                               "heldout_5": ("heldout", "heldout_extra")})
    sets = {name: synth.DEMO_SETS[name] for name in ("heldout", "heldout_extra", "replay", "domain_eval")}
    monkeypatch.setattr(synth, "DEMO_SETS", sets)
    cut = synth.make_demo_set(tmp_path / "cut", only={"heldout": None, "heldout_extra": 1})
    assert sorted(cut) == ["heldout", "heldout_3"]  # no heldout_extra (cut short), no heldout_5, nothing else
    full = synth.make_demo_set(tmp_path / "full")
    names = lambda path: [Path(u.audio_filepath).name for u in read_manifest(path)]  # noqa: E731
    assert names(cut["heldout_3"]) == names(full["heldout_3"]) == names(full["heldout_5"])[:3]
    assert len(list((tmp_path / "cut" / "wavs").iterdir())) == 3
