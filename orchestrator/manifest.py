"""Read and validate JSONL manifests into `Utterance`s; filter by duration; hash for identity.

`read_manifest` stops at the first problem (a run must not start on bad data);
`validate_manifest` lists every problem with its line. Stats and expansion: manifest_tools.py.

A manifest line is `{"audio_filepath": "...", "text": "...", "duration": 1.23}` (duration
optional: read from the audio header when absent). Every problem is a ManifestError whose
`where` is `manifest:line`, so the user can jump straight to it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.artifacts import sha256_file
from orchestrator.audio import audio_info, load_audio
from orchestrator.errors import AudioError, ManifestError


@dataclass(frozen=True)
class Utterance:
    audio_filepath: str  # absolute, normalised
    text: str
    duration: float  # seconds
    line: int  # 1-based line in the manifest


@dataclass(frozen=True)
class Filtered:
    kept: list[Utterance]
    dropped_too_long: int


def _resolve_audio(raw: str, manifest_dir: str) -> str | None:
    """Absolute path of `raw`: as given if absolute, else manifest dir first, then the cwd."""
    candidates = [raw] if os.path.isabs(raw) else [os.path.join(manifest_dir, raw), raw]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


_FIX_JSON = "write one JSON object per line"


def _json_object(raw_line: str) -> tuple[dict | None, tuple[str, str] | None]:
    """The line's JSON object, or (None, (what, fix)) when it is not one."""
    try:
        row = json.loads(raw_line)
    except json.JSONDecodeError as err:
        return None, (f"malformed JSON ({err.msg}, column {err.colno})", _FIX_JSON)
    if not isinstance(row, dict):
        return None, (f"expected a JSON object, got {type(row).__name__}", _FIX_JSON)
    return row, None


def _field_problems(row: dict, manifest_dir: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(resolved audio path or None, every (what, fix) wrong with the row's fields), in line order."""
    problems: list[tuple[str, str]] = []
    audio = None
    raw_path = row.get("audio_filepath")
    if not isinstance(raw_path, str) or not raw_path.strip():
        problems.append(("\"audio_filepath\" is missing, empty or not a string",
                         "add an \"audio_filepath\" field with the audio file's path"))
    text = row.get("text")
    if text is None:
        problems.append(("missing \"text\"", "add a \"text\" field with the transcript"))
    elif not isinstance(text, str) or not text.strip():
        problems.append(("\"text\" is empty or not a string", "give the transcript in \"text\", or drop the line"))
    if isinstance(raw_path, str) and raw_path.strip():
        audio = _resolve_audio(raw_path, manifest_dir)
        if audio is None:
            looked = "" if os.path.isabs(raw_path) else f" (looked in {manifest_dir} and {os.getcwd()})"
            problems.append((f"audio file not found: {raw_path}{looked}", "check the path or regenerate the manifest"))
    duration = row.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration) or duration <= 0):
        problems.append((f"\"duration\" must be a positive number of seconds, got {duration!r}",
                         "fix the value or remove \"duration\" to read it from the audio"))
    return audio, problems


def _parse_line(raw_line: str, where: str, manifest_dir: str, lineno: int) -> Utterance:
    row, bad = _json_object(raw_line)
    if bad:
        raise ManifestError(bad[0], where=where, fix=bad[1])
    audio, problems = _field_problems(row, manifest_dir)
    if problems:
        raise ManifestError(problems[0][0], where=where, fix=problems[0][1])
    duration = row.get("duration")
    if duration is None:
        try:
            duration = audio_info(audio)[0]
        except AudioError as err:
            raise AudioError(f"{audio}: {err.what}", where=where, fix=err.fix) from None
    return Utterance(audio_filepath=audio, text=row["text"], duration=float(duration), line=lineno)


def _lines(path: str) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, decoded line or None when it is not UTF-8) for every line."""
    with open(path, "rb") as fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            try:
                yield lineno, raw_bytes.decode("utf-8-sig")  # tolerate a BOM
            except UnicodeDecodeError:
                yield lineno, None


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ManifestError("manifest not found", where=path,
                            fix="check the path, or build the manifests (python -m orchestrator.synth)")


def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """All utterances of the JSONL manifest at `path`, validated; blank lines are skipped.

    Stops at the first problem; `validate_manifest` lists them all."""
    path = os.fspath(path)
    _require_file(path)
    manifest_dir = os.path.dirname(os.path.abspath(path))
    utts: list[Utterance] = []
    for lineno, raw_line in _lines(path):
        where = f"{path}:{lineno}"
        if raw_line is None:
            raise ManifestError("line is not valid UTF-8", where=where, fix="save the manifest as UTF-8")
        if raw_line.strip():
            utts.append(_parse_line(raw_line, where, manifest_dir, lineno))
    if not utts:
        raise ManifestError("manifest has no utterances", where=path,
                            fix="add at least one JSON line, or point the config at another manifest")
    return utts


def read_rows(path: str | os.PathLike[str]) -> dict[int, dict]:
    """The raw JSON object of every non-blank line, by line number (for tools that keep fields)."""
    path = os.fspath(path)
    _require_file(path)
    rows = {}
    for lineno, raw_line in _lines(path):
        if raw_line and raw_line.strip():
            rows[lineno] = json.loads(raw_line)
    return rows


# --- validation: every problem, not just the first ----------------------------------------------

DURATION_TOLERANCE = 0.1  # seconds a line's "duration" may differ from its audio
NEAR_SILENT_RMS = 1e-4  # about -80 dBFS: normalising to rms_target would amplify mostly noise


class ManifestProblem(ManifestError):
    """One finding of `validate_manifest`: severity "error" (unusable) or "info" (usable as is:
    the one audio path will resample or down-mix it)."""

    def __init__(self, what: str, *, path: str, line: int | None = None, fix: str | None = None,
                 severity: str = "error"):
        super().__init__(what, where=f"{path}:{line}" if line else path, fix=fix)
        self.path, self.line, self.severity = path, line, severity

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def report_line(self) -> str:
        """`file:line: what (fix: ...)`; infos read `file:line: info: what`."""
        return self.one_line() if self.is_error else f"{self.where}: info: {self.what}"


def _declared_duration(row: dict) -> float | None:
    d = row.get("duration")
    ok = isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d > 0
    return float(d) if ok else None


def _audio_problems(audio: str, declared: float | None, sample_rate: int,
                    tolerance: float) -> list[tuple[str, str | None, str]]:
    """(what, fix, severity) for the audio file itself, decoded through the one audio path."""
    if os.path.getsize(audio) == 0:
        return [(f"{audio}: audio file is empty (0 bytes)", "re-export the audio or drop the line", "error")]
    try:
        _, rate, channels = audio_info(audio)
        wave = load_audio(audio, sample_rate=rate, rms_target=None)  # native rate: checks only
    except AudioError as err:
        return [(f"{audio}: {err.what}", err.fix, "error")]
    found: list[tuple[str, str | None, str]] = []
    rms = float(np.sqrt(np.dot(wave, wave) / wave.size))
    if rms < NEAR_SILENT_RMS:
        found.append((f"{audio}: audio is near-silent (RMS {rms:.1e})", "remove the utterance or re-record it",
                      "error"))
    actual = wave.size / rate
    if declared is not None and abs(declared - actual) > tolerance:
        found.append((f"\"duration\" {declared:g} s disagrees with the audio ({actual:.3f} s)",
                      f"set \"duration\" to {actual:.3f} or remove it to read it from the audio", "error"))
    if rate != sample_rate:
        found.append((f"sample rate {rate} Hz: will be resampled to {sample_rate} Hz", None, "info"))
    if channels > 1:
        found.append((f"{channels} channels: will be down-mixed to mono", None, "info"))
    return found


def validate_manifest(path: str | os.PathLike[str], *, sample_rate: int = 16000,
                      tolerance: float = DURATION_TOLERANCE) -> list[ManifestProblem]:
    """Every problem of the manifest at `path`, in line order, each naming its line.

    Checks each line (UTF-8, JSON object, fields, audio found), decodes each audio file through
    the one audio path (unreadable, empty, NaN/inf, silent), compares "duration" with the audio,
    and flags duplicates (same file or same bytes as an earlier line). Audio that is not
    `sample_rate` or not mono is an info, not an error. A missing manifest raises ManifestError.
    """
    path = os.fspath(path)
    _require_file(path)
    manifest_dir = os.path.dirname(os.path.abspath(path))
    problems: list[ManifestProblem] = []
    first_by_path: dict[str, int] = {}
    first_by_hash: dict[str, int] = {}
    utterances = 0
    for lineno, raw_line in _lines(path):
        def add(what: str, fix: str | None = None, severity: str = "error") -> None:
            problems.append(ManifestProblem(what, path=path, line=lineno, fix=fix, severity=severity))

        if raw_line is None:
            add("line is not valid UTF-8", "save the manifest as UTF-8")
            continue
        if not raw_line.strip():
            continue
        utterances += 1
        row, bad = _json_object(raw_line)
        if bad:
            add(*bad)
            continue
        audio, field_problems = _field_problems(row, manifest_dir)
        for what, fix in field_problems:
            add(what, fix)
        if audio is None:
            continue
        if audio in first_by_path:
            add(f"duplicate: same audio file as line {first_by_path[audio]}", "drop one of the two lines")
            continue
        first_by_path[audio] = lineno
        for what, fix, severity in _audio_problems(audio, _declared_duration(row), sample_rate, tolerance):
            add(what, fix, severity)
        digest = sha256_file(Path(audio))
        if digest in first_by_hash:
            add(f"duplicate: same audio content as line {first_by_hash[digest]}", "drop one of the two lines")
        else:
            first_by_hash[digest] = lineno
    if not utterances:
        problems.append(ManifestProblem("manifest has no utterances", path=path,
                                        fix="add at least one JSON line"))
    return problems


def filter_by_duration(utts: list[Utterance], max_seconds: float) -> Filtered:
    """Keep utterances no longer than `max_seconds`; count the rest."""
    kept = [u for u in utts if u.duration <= max_seconds]
    return Filtered(kept=kept, dropped_too_long=len(utts) - len(kept))


def manifest_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the manifest file's bytes (its identity in run specs)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        raise ManifestError("manifest not found", where=os.fspath(path),
                            fix="check the path") from None

