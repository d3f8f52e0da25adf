"""Read and validate JSONL manifests into `Utterance`s; filter by duration; hash for identity.

A manifest line is `{"audio_filepath": "...", "text": "...", "duration": 1.23}` (duration
optional: read from the audio header when absent). Every problem is a ManifestError whose
`where` is `manifest:line`, so the user can jump straight to it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass

from orchestrator.audio import audio_info
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


def _parse_line(raw_line: str, where: str, manifest_dir: str, lineno: int) -> Utterance:
    try:
        row = json.loads(raw_line)
    except json.JSONDecodeError as err:
        raise ManifestError(f"malformed JSON ({err.msg}, column {err.colno})", where=where,
                            fix="write one JSON object per line") from None
    if not isinstance(row, dict):
        raise ManifestError(f"expected a JSON object, got {type(row).__name__}", where=where,
                            fix="write one JSON object per line")

    raw_path = row.get("audio_filepath")
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise ManifestError("\"audio_filepath\" is missing, empty or not a string", where=where,
                            fix="add an \"audio_filepath\" field with the audio file's path")
    text = row.get("text")
    if text is None:
        raise ManifestError("missing \"text\"", where=where,
                            fix="add a \"text\" field with the transcript")
    if not isinstance(text, str) or not text.strip():
        raise ManifestError("\"text\" is empty or not a string", where=where,
                            fix="give the transcript in \"text\", or drop the line")

    audio = _resolve_audio(raw_path, manifest_dir)
    if audio is None:
        looked = "" if os.path.isabs(raw_path) else f" (looked in {manifest_dir} and {os.getcwd()})"
        raise ManifestError(f"audio file not found: {raw_path}{looked}", where=where,
                            fix="check the path or regenerate the manifest")

    duration = row.get("duration")
    if duration is None:
        try:
            duration = audio_info(audio)[0]
        except AudioError as err:
            raise AudioError(f"{audio}: {err.what}", where=where, fix=err.fix) from None
    elif (isinstance(duration, bool) or not isinstance(duration, (int, float))
          or not math.isfinite(duration) or duration <= 0):
        raise ManifestError(f"\"duration\" must be a positive number of seconds, got {duration!r}",
                            where=where, fix="fix the value or remove \"duration\" to read it "
                            "from the audio")
    return Utterance(audio_filepath=audio, text=text, duration=float(duration), line=lineno)


def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """All utterances of the JSONL manifest at `path`, validated; blank lines are skipped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ManifestError("manifest not found", where=path,
                            fix="check the path, or build the manifests (python -m orchestrator.synth)")
    manifest_dir = os.path.dirname(os.path.abspath(path))
    utts: list[Utterance] = []
    with open(path, "rb") as fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                raw_line = raw_bytes.decode("utf-8-sig")  # tolerate a BOM
            except UnicodeDecodeError:
                raise ManifestError("line is not valid UTF-8", where=where,
                                    fix="save the manifest as UTF-8") from None
            if raw_line.strip():
                utts.append(_parse_line(raw_line, where, manifest_dir, lineno))
    if not utts:
        raise ManifestError("manifest has no utterances", where=path,
                            fix="add at least one JSON line, or point the config at another manifest")
    return utts


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

