"""The rules a manifest line must follow, written once: each yields `Problem`s.

Three consumers apply them (orchestrator/data/manifest.py): `validate_manifest` lists every
problem, `read_manifest` / `check_lines` stop at the first, `load_split` decodes the audio and
refuses or counts by the run's policies. They differ in what they do with a problem, never in
what a problem is or how it is worded.

The rules, by how much they cost:
- `parse_line` (the line alone, no audio read): UTF-8, one JSON object, the fields: the audio
  path (`audio_filepath`, or `audio` as the upstream Moonshine trainer writes it; both present
  and different is an error), `text`, the audio file found, a positive `duration` if given, a
  non-empty string `speaker` if given;
- `text_problems`: text that has no words once normalised;
- `duplicate_file`: the same audio file as an earlier line;
- `header_problems` (the audio header only): unreadable header, `duration` against it;
- `audio_problems` (the audio decoded through the one audio path): unusable audio, the same
  bytes as an earlier line, `duration` against the samples, all-silent and near-silent audio,
  and (infos) another sample rate or several channels.
Each Problem has a `code` consumers key their policies on (e.g. `silent`: skipped or refused by
data.on_silent in a run, an error in `manifest validate`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.artifacts.atomic import sha256_file
from orchestrator.data.audio import AudioFacts, audio_info, inspect_audio
from orchestrator.errors import AudioError, ManifestError

DURATION_TOLERANCE = 0.1  # seconds a line's "duration" may differ from its audio
NEAR_SILENT_RMS = 1e-4  # about -80 dBFS: normalising to rms_target would amplify mostly noise
AUDIO_FIELDS = ("audio_filepath", "audio")  # ours (NeMo's), the upstream Moonshine trainer's
FIX_JSON = "write one JSON object per line"
FIX_DUPLICATE = "drop one of the two lines: a manifest lists each utterance once"
FIX_AUDIO = "re-export the file as 16-bit PCM WAV or FLAC, or drop the line"
FIX_SILENT = ("remove the utterance (a run skips it with data.on_silent=skip, the default, and refuses it in "
              "evaluation manifests)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with (or worth knowing about) a manifest line."""

    line: int | None  # 1-based; None: the manifest as a whole
    field: str | None  # the field at fault ("text", "duration", ...); None: the line or its audio
    what: str
    fix: str | None
    severity: str = "error"  # error: unusable | info: usable as is
    code: str = "invalid"  # what kind, for consumers' policies (silent, near_silent, resampled, ...)
    audio: bool = False  # about the audio file itself: raised as AudioError

    def error(self, path: str) -> ManifestError:
        """The exception a consumer that stops at the first problem raises for it."""
        cls = AudioError if self.audio else ManifestError
        return cls(self.what, where=f"{path}:{self.line}" if self.line else path, fix=self.fix)


@dataclass(frozen=True)
class Row:
    """A line's fields as far as they could be read (`audio` resolved, None if not found)."""

    line: int
    fields: dict
    audio: str | None
    text: object
    duration: float | None  # declared and valid, else None
    speaker: str | None


def resolve_audio(raw: str, manifest_dir: str) -> str | None:
    """Absolute path of `raw`: as given if absolute, else manifest dir first, then the cwd."""
    candidates = [raw] if os.path.isabs(raw) else [os.path.join(manifest_dir, raw), raw]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def json_object(raw_line: str) -> tuple[dict | None, str | None]:
    """The line's JSON object, or (None, what is wrong) when it is not one."""
    try:
        row = json.loads(raw_line)
    except json.JSONDecodeError as err:
        return None, f"malformed JSON ({err.msg}, column {err.colno})"
    except (ValueError, RecursionError) as err:  # e.g. nesting too deep, an integer too long
        return None, f"malformed JSON ({' '.join(str(err).split()) or type(err).__name__})"
    if not isinstance(row, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
                type(None): "null"}.get(type(row), type(row).__name__)
        return None, f"expected a JSON object, got {kind}"
    return row, None


def audio_field(fields: dict) -> str:
    """The name of the field that holds the audio path: `audio_filepath`, else `audio` if present."""
    return "audio_filepath" if "audio_filepath" in fields or "audio" not in fields else "audio"


def valid_duration(value: object) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def parse_line(lineno: int, raw_line: str | None, manifest_dir: str) -> tuple[Row | None, list[Problem]]:
    """(the row, or None when the line is not a JSON object; every problem of the line alone, in
    field order). `raw_line` None: the line is not UTF-8."""
    def problem(what: str, fix: str, field: str | None = None) -> Problem:
        return Problem(lineno, field, what, fix)

    if raw_line is None:
        return None, [problem("line is not valid UTF-8", "save the manifest as UTF-8")]
    fields, bad = json_object(raw_line)
    if fields is None:
        return None, [problem(bad, FIX_JSON)]
    problems: list[Problem] = []
    name = audio_field(fields)
    raw_path = fields.get(name)
    path_ok = isinstance(raw_path, str) and bool(raw_path.strip())
    if not path_ok:
        problems.append(problem(f"\"{name}\" is missing, empty or not a string",
                                f"add an \"{name}\" field with the audio file's path", name))
    elif "audio" in fields and name == "audio_filepath" and fields["audio"] != raw_path:
        problems.append(problem(f"\"audio\" ({fields['audio']!r}) and \"audio_filepath\" ({raw_path!r}) name "
                                "different files", "keep one of the two fields (or make them equal)", "audio"))
    text = fields.get("text")
    if text is None:
        problems.append(problem("missing \"text\"", "add a \"text\" field with the transcript", "text"))
    elif not isinstance(text, str) or not text.strip():
        problems.append(problem("\"text\" is empty or not a string", "give the transcript in \"text\", or drop the line",
                                "text"))
    audio = None
    if path_ok:
        audio = resolve_audio(raw_path, manifest_dir)
        if audio is None:
            looked = "" if os.path.isabs(raw_path) else f" (looked in {manifest_dir} and {os.getcwd()})"
            kind = "is a directory, not an audio file" if os.path.isdir(
                raw_path if os.path.isabs(raw_path) else os.path.join(manifest_dir, raw_path)) else "not found"
            problems.append(problem(f"audio file {kind}: {raw_path}{looked}", "check the path or regenerate the manifest",
                                    name))
    duration = fields.get("duration")
    if duration is not None and valid_duration(duration) is None:
        problems.append(problem(f"\"duration\" must be a positive number of seconds, got {duration!r}",
                                "fix the value or remove \"duration\" to read it from the audio", "duration"))
    speaker = fields.get("speaker")
    if speaker is not None and (not isinstance(speaker, str) or not speaker.strip()):
        problems.append(problem(f"\"speaker\" must be a non-empty string, got {speaker!r}",
                                "give the speaker's id as a string, or remove \"speaker\"", "speaker"))
    return Row(lineno, fields, audio, text, valid_duration(duration),
               speaker.strip() if isinstance(speaker, str) and speaker.strip() else None), problems


def text_problems(line: int, text: object) -> list[Problem]:
    from orchestrator.data.textnorm import normalize

    if isinstance(text, str) and text.strip() and not normalize(text):
        return [Problem(line, "text", f"\"text\" {text!r} has no words once normalised (lower-case, punctuation "
                        "removed)", "give the spoken words in \"text\", or drop the line")]
    return []


def duplicate_file(line: int, audio: str, first_by_path: dict[str, int]) -> Problem | None:
    """The same audio file as an earlier line (recorded in `first_by_path` otherwise)."""
    if audio in first_by_path:
        return Problem(line, None, f"duplicate: same audio file as line {first_by_path[audio]}", FIX_DUPLICATE,
                       code="duplicate")
    first_by_path[audio] = line
    return None


def duration_problem(line: int, declared: float | None, actual: float, tolerance: float) -> list[Problem]:
    if declared is None or abs(declared - actual) <= tolerance:
        return []
    return [Problem(line, "duration",
                    f"\"duration\" {declared:g} s disagrees with the audio ({actual:.3f} s) by more than {tolerance:g} s",
                    f"set \"duration\" to {actual:.3f} or remove it to read it from the audio (a wrong or truncated "
                    "file?)")]


def header_duration(line: int, audio: str) -> tuple[float | None, list[Problem]]:
    """The duration in the audio file's header, or the problem reading it."""
    try:
        return audio_info(audio)[0], []
    except AudioError as err:
        return None, [Problem(line, None, f"{audio}: {err.what}", err.fix, audio=True, code="unreadable")]


def header_problems(line: int, audio: str, declared: float | None, tolerance: float) -> list[Problem]:
    actual, problems = header_duration(line, audio)
    return problems or duration_problem(line, declared, actual, tolerance)


def audio_problems(line: int, audio: str, declared: float | None, *, sample_rate: int, tolerance: float,
                   first_by_hash: dict[str, int]) -> tuple[AudioFacts | None, list[Problem]]:
    """(facts, or None when the audio is unusable; every problem of the decoded audio, in order:
    unusable, same bytes as an earlier line, duration, silent, near-silent, then the infos)."""
    found: list[Problem] = []
    facts = None
    try:
        facts = inspect_audio(audio)
    except AudioError as err:
        found.append(Problem(line, None, f"{audio}: {err.what}", err.fix, audio=True, code="unusable"))
    except Exception as err:  # noqa: BLE001 - whatever a broken file raises, it is this line's problem
        found.append(Problem(line, None, f"{audio}: cannot use this audio ({type(err).__name__}: {err})", FIX_AUDIO,
                             audio=True, code="unusable"))
    try:
        digest = facts.sha256 if facts else sha256_file(Path(audio))
    except OSError:
        digest = None  # unreadable: reported above
    if digest is not None:
        if digest in first_by_hash:
            found.append(Problem(line, None, f"duplicate: same audio content as line {first_by_hash[digest]}",
                                 FIX_DUPLICATE, code="duplicate"))
        else:
            first_by_hash[digest] = line
    if facts is None:
        return None, found
    found += duration_problem(line, declared, facts.duration, tolerance)
    if facts.rms == 0.0:
        found.append(Problem(line, None, f"{audio}: audio is all silent (RMS 0)", FIX_SILENT, audio=True,
                             code="silent"))
    elif facts.rms < NEAR_SILENT_RMS:
        found.append(Problem(line, None, f"{audio}: audio is near-silent (RMS {facts.rms:.1e})",
                             "remove the utterance or re-record it", audio=True, code="near_silent"))
    if facts.sample_rate != sample_rate:
        found.append(Problem(line, None, f"sample rate {facts.sample_rate} Hz: will be resampled to {sample_rate} Hz",
                             None, "info", code="resampled"))
    if facts.channels > 1:
        found.append(Problem(line, None, f"{facts.channels} channels: will be down-mixed to mono", None, "info",
                             code="downmixed"))
    return facts, found
