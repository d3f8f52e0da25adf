"""Issue #16's manifest features on real espeak-ng speech: the upstream `{"audio", "text"}` row
form, an optional `speaker` (shown by validate and stats; shared speakers warned or refused by
the run preflight), and transcripts written in another orthography than the training manifest's."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from orchestrator.config.spec import spec_from_overrides
from orchestrator.data.manifest import check_lines, load_splits, read_manifest, read_rows, validate_manifest
from orchestrator.data.manifest_compare import orthography, orthography_differences
from orchestrator.data.manifest_tools import expand_manifest, manifest_stats, render_stats
from orchestrator.errors import ConfigError, ManifestError
from tests.conftest import cli


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(manifest: Path) -> list[dict]:
    """The manifest's rows, their audio paths absolute (to be written elsewhere)."""
    rows = read_rows(manifest)
    return [{**rows[u.line], "audio_filepath": u.audio_filepath} for u in read_manifest(manifest)]


def test_the_upstream_row_form_reads_like_ours(speech, tmp_path: Path) -> None:
    ours = read_manifest(speech["domain"])
    upstream = _write(tmp_path / "upstream.jsonl", [{"audio": u.audio_filepath, "text": u.text} for u in ours])
    theirs = check_lines(upstream)
    assert [(u.audio_filepath, u.text) for u in theirs] == [(u.audio_filepath, u.text) for u in ours]
    assert all(abs(a.duration - b.duration) < 0.1 for a, b in zip(theirs, ours))
    assert not validate_manifest(upstream)
    out = expand_manifest(upstream, tmp_path / "expanded.jsonl", size=3, bins=1).out  # rows keep their fields
    assert [set(r) for r in read_rows(out).values()] == [{"audio_filepath", "text", "duration"}] * 3
    assert len(check_lines(out)) == 3
    # both fields naming the same file is fine; naming two files is an error on that line
    same = _write(tmp_path / "same.jsonl", [{"audio": u.audio_filepath, "audio_filepath": u.audio_filepath,
                                             "text": u.text} for u in ours])
    assert len(read_manifest(same)) == len(ours)
    rows = [{"audio_filepath": u.audio_filepath, "text": u.text} for u in ours]
    rows[1]["audio"] = ours[0].audio_filepath
    both = _write(tmp_path / "both.jsonl", rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(both)
    assert info.value.where == f"{both}:2" and '"audio"' in info.value.what and '"audio_filepath"' in info.value.what
    assert info.value.fix
    (problem,) = validate_manifest(both)
    assert (problem.line, problem.field, problem.severity) == (2, "audio", "error")
    # a row without either field names the one we write
    missing = _write(tmp_path / "missing.jsonl", [{"text": "no audio"}])
    with pytest.raises(ManifestError, match='"audio_filepath" is missing'):
        read_manifest(missing)


def test_speakers_are_read_checked_and_shown(speech, tmp_path: Path) -> None:
    rows = _rows(speech["train"])
    for i, row in enumerate(rows):
        row["speaker"] = f"spk{i % 3}"
    m = _write(tmp_path / "spk.jsonl", rows)
    utts = read_manifest(m)
    assert [u.speaker for u in utts] == [f"spk{i % 3}" for i in range(len(rows))]
    problems = validate_manifest(m)
    assert [(p.severity, p.field) for p in problems] == [("info", "speaker")]
    assert problems[0].what.startswith("3 speakers (utterances each: spk0 ")
    stats = manifest_stats(m)
    assert sum(stats["speakers"].values()) == len(rows) and set(stats["speakers"]) == {"spk0", "spk1", "spk2"}
    assert "speakers    3 speakers" in render_stats(stats)
    assert manifest_stats(speech["train"])["speakers"] == {}  # no speaker field: none counted

    rows[2]["speaker"] = 7
    bad = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(bad)
    assert info.value.where == f"{bad}:3" and '"speaker" must be a non-empty string, got 7' in info.value.what

    proc = cli("manifest", "validate", str(m))
    assert proc.returncode == 0 and "info: 3 speakers" in proc.stdout, proc.stdout + proc.stderr


def _with_speakers(speech, tmp_path: Path, shared: int) -> dict[str, Path]:
    """Training speakers t0..t2; the first `shared` domain utterances by t0, the rest by d0."""
    train = _rows(speech["train"])
    for i, row in enumerate(train):
        row["speaker"] = f"t{i % 3}"
    domain = _rows(speech["domain"])
    for i, row in enumerate(domain):
        row["speaker"] = "t0" if i < shared else "d0"
    return {"train": _write(tmp_path / "train.jsonl", train), "domain": _write(tmp_path / "domain.jsonl", domain)}


def test_the_preflight_warns_of_shared_speakers_or_refuses_them(speech, run_overrides, tmp_path: Path,
                                                                caplog) -> None:
    from orchestrator.training.loop import load_splits as preflight

    paths = _with_speakers(speech, tmp_path, shared=2)
    overrides = [*run_overrides, f"data.train_manifest={paths['train']}", f"eval.domain_manifest={paths['domain']}"]
    with caplog.at_level(logging.WARNING, logger="orchestrator.training.loop"):
        preflight(spec_from_overrides(overrides))
    warned = [r.getMessage() for r in caplog.records if "speaker" in r.getMessage()]
    n_domain = len(read_manifest(paths["domain"]))
    assert len(warned) == 1 and f"1 speaker(s) (t0) also speak in the training manifest: 2 of {n_domain}" in warned[0]
    assert str(paths["domain"]) in warned[0]

    spec = spec_from_overrides([*overrides, "data.speaker_overlap=refuse"])
    with pytest.raises(ManifestError) as info:
        load_splits(spec.manifests, spec.data)  # what the CLI checks before torch loads
    assert info.value.where == str(paths["domain"]) and "2 of" in info.value.what
    assert "data.speaker_overlap=warn" in info.value.fix

    (tmp_path / "disjoint").mkdir()
    disjoint = _with_speakers(speech, tmp_path / "disjoint", shared=0)
    spec = spec_from_overrides([*run_overrides, f"data.train_manifest={disjoint['train']}",
                                f"eval.domain_manifest={disjoint['domain']}", "data.speaker_overlap=refuse"])
    assert len(load_splits(spec.manifests, spec.data)["domain"].kept) == n_domain  # nothing shared: fine

    with pytest.raises(ConfigError) as info:
        spec_from_overrides([*run_overrides, "data.speaker_overlap=sometimes"])
    assert info.value.where == "data.speaker_overlap"


def test_the_preflight_warns_of_another_orthography(speech, run_overrides, tmp_path: Path, caplog) -> None:
    from orchestrator.training.loop import load_splits as preflight

    domain = _rows(speech["domain"])
    for row in domain:
        row["text"] = row["text"].upper()
    upper = _write(tmp_path / "upper.jsonl", domain)
    with caplog.at_level(logging.WARNING, logger="orchestrator.training.loop"):
        preflight(spec_from_overrides([*run_overrides, f"eval.domain_manifest={upper}"]))
    warned = [r.getMessage() for r in caplog.records if "orthography" in r.getMessage()]
    assert len(warned) == 1 and f"{len(domain)} of {len(domain)} lines are upper case" in warned[0], warned
    assert str(upper) in warned[0] and "(domain)" in warned[0]


def test_numbers_written_as_digits_against_spelled_out(speech, tmp_path: Path) -> None:
    audio = [u.audio_filepath for u in read_manifest(speech["train"])]
    words = ["turn left heading two seven zero", "contact tower", "climb to flight level three one zero",
             "good morning", "runway zero niner", "hold short"]
    digits = ["turn left heading 270", "contact tower", "climb to flight level 310", "good morning",
              "runway 09", "hold short"]
    plain = ["contact tower", "good morning", "hold short", "say again", "roger", "wilco"]

    def manifest(name: str, texts: list[str]):
        return read_manifest(_write(tmp_path / f"{name}.jsonl",
                                    [{"audio": a, "text": t} for a, t in zip(audio, texts)]))

    spelled, written, neither = orthography(manifest("words", words)), orthography(manifest("digits", digits)), \
        orthography(manifest("plain", plain))
    assert (spelled.spelled, spelled.digits, written.digits, written.spelled) == (3, 0, 3, 0)
    assert orthography_differences(spelled, neither) == orthography_differences(neither, written) == []
    assert orthography_differences(spelled, written) == [
        "3 of 6 lines write numbers as digits, the training manifest spells them out (3 lines) and never uses digits"]
    assert orthography_differences(written, spelled) == [
        "3 of 6 lines spell numbers out, the training manifest writes digits (3 lines)"]
    assert orthography_differences(spelled, spelled) == []
