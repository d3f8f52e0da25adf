"""Read and validate JSONL manifests into `Utterance`s; screen their audio; hash for identity.

`read_manifest` checks every line and stops at the first problem (headers only, cheap);
`check_lines` adds what needs no decoding (duplicate files, "duration" against the header, text
without words); `load_split` is what a run reads: it also decodes every audio file once through
the one audio path and refuses what cannot be trained or scored on, before torch loads and
before the registry gets a row (`load_splits` applies a run's data settings to its manifests);
`validate_manifest` lists every problem with its line. Stats and expansion: manifest_tools.py.

A manifest line is `{"audio_filepath": "...", "text": "...", "duration": 1.23}` (duration
optional: read from the audio header when absent). Every problem is a ManifestError whose
`where` is `manifest:line`, so the user can jump straight to it.

What a run does with each kind of questionable input (the same rules for every manifest):
- unusable audio (missing, empty, undecodable, no samples, NaN/inf), empty text or text with no
  words, a duplicate (same file, or same bytes, as an earlier line): refused, naming the line.
- "duration" more than DURATION_TOLERANCE (0.1 s) away from the decoded audio: refused. The
  declared duration drives the max_seconds filter and batching, and a wrong one usually means
  the line points at the wrong (or a truncated) file. Removing "duration" reads it from the audio.
- all-silent audio (RMS 0): skipped and counted, or refused, by `on_silent`. A run applies
  data.on_silent to the training (and replay) manifest; evaluation manifests always refuse it,
  since an evaluation set is scored whole (and `orchestrator eval` must reproduce its WER).
- another sample rate or several channels: kept, resampled / down-mixed by load_audio, counted.
- longer than max_seconds: dropped and counted.
Duplicates are refused rather than dropped: a manifest that lists an utterance twice was almost
always built by a merge that ran twice, and in an evaluation set the copy silently doubles that
utterance's weight in the WER. To oversample on purpose, use data.replay_manifest.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.artifacts.atomic import sha256_file
from orchestrator.data.audio import AudioFacts, audio_info, inspect_audio
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
    skipped_silent: int = 0  # all-silent audio left out (data.on_silent=skip)
    resampled: int = 0  # kept utterances whose audio is not at the run's sample rate
    downmixed: int = 0  # kept utterances with more than one channel
    sha256: dict[str, str] = field(default_factory=dict, compare=False)  # audio path -> bytes' sha256

    def counts(self) -> dict[str, int]:
        """What the run keeps and what it changed or left out (the zero extras omitted)."""
        extra = {"skipped_silent": self.skipped_silent, "resampled": self.resampled, "downmixed": self.downmixed}
        return {"utterances": len(self.kept), "dropped_too_long": self.dropped_too_long,
                **{k: v for k, v in extra.items() if v}}


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
    except (ValueError, RecursionError) as err:  # e.g. nesting too deep, an integer too long
        return None, (f"malformed JSON ({' '.join(str(err).split()) or type(err).__name__})", _FIX_JSON)
    if not isinstance(row, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
                type(None): "null"}.get(type(row), type(row).__name__)
        return None, (f"expected a JSON object, got {kind}", _FIX_JSON)
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
            kind = "is a directory, not an audio file" if os.path.isdir(
                raw_path if os.path.isabs(raw_path) else os.path.join(manifest_dir, raw_path)) else "not found"
            problems.append((f"audio file {kind}: {raw_path}{looked}", "check the path or regenerate the manifest"))
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
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise ManifestError(f"cannot read the manifest ({err.strerror or err})", where=path,
                            fix="check the file's permissions") from None
    with fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            try:
                yield lineno, raw_bytes.decode("utf-8-sig")  # tolerate a BOM
            except UnicodeDecodeError:
                yield lineno, None


def _require_file(path: str) -> None:
    if os.path.isdir(path):
        raise ManifestError("manifest path is a directory, not a JSONL file", where=path,
                            fix="point it at the .jsonl file inside")
    if not os.path.isfile(path):
        raise ManifestError("manifest not found", where=path,
                            fix="check the path, or build the manifests (python -m orchestrator.data.synth)")


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
_FIX_DUPLICATE = "drop one of the two lines: a manifest lists each utterance once"
_FIX_AUDIO = "re-export the file as 16-bit PCM WAV or FLAC, or drop the line"


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


def _duration_problem(declared: float, actual: float, tolerance: float) -> tuple[str, str] | None:
    if abs(declared - actual) <= tolerance:
        return None
    return (f"\"duration\" {declared:g} s disagrees with the audio ({actual:.3f} s) by more than {tolerance:g} s",
            f"set \"duration\" to {actual:.3f} or remove it to read it from the audio (a wrong or truncated file?)")


def _no_words(text: object) -> tuple[str, str] | None:
    from orchestrator.data.textnorm import normalize

    if isinstance(text, str) and text.strip() and not normalize(text):
        return (f"\"text\" {text!r} has no words once normalised (lower-case, punctuation removed)",
                "give the spoken words in \"text\", or drop the line")
    return None


def _audio_problems(audio: str, declared: float | None, sample_rate: int,
                    tolerance: float) -> tuple[AudioFacts | None, list[tuple[str, str | None, str]]]:
    """(facts or None, every (what, fix, severity)) for the audio file, decoded through the one audio path."""
    try:
        facts = inspect_audio(audio)
    except AudioError as err:
        return None, [(f"{audio}: {err.what}", err.fix, "error")]
    except Exception as err:  # noqa: BLE001 - whatever a broken file raises, it is this line's problem
        return None, [(f"{audio}: cannot use this audio ({type(err).__name__}: {err})", _FIX_AUDIO, "error")]
    found: list[tuple[str, str | None, str]] = []
    if facts.rms == 0.0:
        found.append((f"{audio}: audio is all silent (RMS 0)", "remove the utterance (a run skips it with "
                      "data.on_silent=skip, the default, and refuses it in evaluation manifests)", "error"))
    elif facts.rms < NEAR_SILENT_RMS:
        found.append((f"{audio}: audio is near-silent (RMS {facts.rms:.1e})", "remove the utterance or re-record it",
                      "error"))
    mismatch = None if declared is None else _duration_problem(declared, facts.duration, tolerance)
    if mismatch:
        found.append((*mismatch, "error"))
    if facts.sample_rate != sample_rate:
        found.append((f"sample rate {facts.sample_rate} Hz: will be resampled to {sample_rate} Hz", None, "info"))
    if facts.channels > 1:
        found.append((f"{facts.channels} channels: will be down-mixed to mono", None, "info"))
    return facts, found


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
        wordless = _no_words(row.get("text"))
        if wordless:
            add(*wordless)
        if audio is None:
            continue
        if audio in first_by_path:
            add(f"duplicate: same audio file as line {first_by_path[audio]}", _FIX_DUPLICATE)
            continue
        first_by_path[audio] = lineno
        facts, audio_problems = _audio_problems(audio, _declared_duration(row), sample_rate, tolerance)
        for what, fix, severity in audio_problems:
            add(what, fix, severity)
        try:
            digest = facts.sha256 if facts else sha256_file(Path(audio))
        except OSError:
            continue  # unreadable: already reported above
        if digest in first_by_hash:
            add(f"duplicate: same audio content as line {first_by_hash[digest]}", _FIX_DUPLICATE)
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


# --- what a run reads: every line checked, every audio file decoded once -------------------------

SILENT_POLICIES = ("skip", "refuse")


def _inspect(audio: str, where: str) -> AudioFacts:
    """inspect_audio, with any failure turned into one error naming the manifest line."""
    try:
        return inspect_audio(audio)
    except AudioError as err:
        raise AudioError(f"{audio}: {err.what}", where=where, fix=err.fix) from None
    except Exception as err:  # noqa: BLE001 - whatever a broken file raises, it is this line's problem
        raise AudioError(f"{audio}: cannot use this audio ({type(err).__name__}: {err})", where=where,
                         fix=_FIX_AUDIO) from None


def check_lines(path: str | os.PathLike[str], *, tolerance: float = DURATION_TOLERANCE) -> list[Utterance]:
    """read_manifest plus every check that needs no decoding, stopping at the first problem:
    text without words, the same audio file twice, an unreadable audio header, a "duration"
    that disagrees with the header. Cheap (headers only): the CLI runs it before loading torch."""
    path = os.fspath(path)
    utts = read_manifest(path)
    first_by_path: dict[str, int] = {}
    for u in utts:
        where = f"{path}:{u.line}"
        wordless = _no_words(u.text)
        if wordless:
            raise ManifestError(wordless[0], where=where, fix=wordless[1])
        if u.audio_filepath in first_by_path:
            raise ManifestError(f"duplicate: same audio file as line {first_by_path[u.audio_filepath]}",
                                where=where, fix=_FIX_DUPLICATE)
        first_by_path[u.audio_filepath] = u.line
        try:
            header_duration = audio_info(u.audio_filepath)[0]
        except AudioError as err:
            raise AudioError(f"{u.audio_filepath}: {err.what}", where=where, fix=err.fix) from None
        mismatch = _duration_problem(u.duration, header_duration, tolerance)
        if mismatch:
            raise ManifestError(mismatch[0], where=where, fix=mismatch[1])
    return utts


_SPLITS: dict[tuple, tuple[tuple, Filtered]] = {}  # load_split's results in this process (see there)


def _file_stats(paths: Sequence[str]) -> tuple | None:
    try:
        return tuple((p, st.st_mtime_ns, st.st_size) for p in paths for st in [os.stat(p)])
    except OSError:
        return None


def load_split(path: str | os.PathLike[str], *, max_seconds: float, sample_rate: int = 16000,
               on_silent: str = "refuse", silent_fix: str | None = None,
               tolerance: float = DURATION_TOLERANCE) -> Filtered:
    """The utterances of the manifest at `path` that a run uses, with what was left out and why.

    Checks every line (check_lines), then decodes each audio file once through the one audio
    path and refuses, naming the line: unusable audio, text without words, duplicates (same
    file or same bytes as an earlier line) and a "duration" more than `tolerance` seconds off.
    All-silent audio is skipped and counted (`on_silent="skip"`) or refused; other sample
    rates and channel counts are counted (load_audio resamples and down-mixes them);
    utterances over `max_seconds` are dropped and counted. See the module doc for why.

    A result is kept for the life of the process and reused while the manifest and every audio
    file it names are unchanged (same size and mtime): the CLI checks the data before it loads
    torch, and the run that follows does not decode it all again."""
    path = os.fspath(path)
    key = (os.path.abspath(path), _file_stats([path]), max_seconds, sample_rate, on_silent, silent_fix, tolerance)
    cached = _SPLITS.get(key)
    if cached is not None and _file_stats([p for p, _, _ in cached[0]]) == cached[0]:
        return cached[1]
    part, audio = _load_split(path, max_seconds=max_seconds, sample_rate=sample_rate, on_silent=on_silent,
                              silent_fix=silent_fix, tolerance=tolerance)
    stats = _file_stats(audio)
    if key[1] is not None and stats is not None:
        _SPLITS[key] = (stats, part)
    return part


def _load_split(path: str, *, max_seconds: float, sample_rate: int, on_silent: str, silent_fix: str | None,
                tolerance: float) -> tuple[Filtered, list[str]]:
    if on_silent not in SILENT_POLICIES:
        raise ManifestError(f"on_silent must be one of {', '.join(SILENT_POLICIES)}, got {on_silent!r}",
                            where="data.on_silent", fix="set data.on_silent=skip")
    utts = check_lines(path, tolerance=tolerance)
    first_by_hash: dict[str, int] = {}
    facts_of: dict[str, AudioFacts] = {}
    usable: list[Utterance] = []
    silent = 0
    for u in utts:
        where = f"{path}:{u.line}"
        facts = _inspect(u.audio_filepath, where)
        if facts.sha256 in first_by_hash:
            raise ManifestError(f"duplicate: {u.audio_filepath} has the same audio content as line "
                                f"{first_by_hash[facts.sha256]}", where=where, fix=_FIX_DUPLICATE)
        first_by_hash[facts.sha256] = u.line
        mismatch = _duration_problem(u.duration, facts.duration, tolerance)
        if mismatch:
            raise ManifestError(mismatch[0], where=where, fix=mismatch[1])
        if facts.rms == 0.0:
            if on_silent == "skip":
                silent += 1
                continue
            raise AudioError(f"{u.audio_filepath}: audio is all silent (RMS 0)", where=where,
                             fix=silent_fix or "drop the line")
        facts_of[u.audio_filepath] = facts
        usable.append(u)
    part = filter_by_duration(usable, max_seconds)
    if not part.kept:
        raise ManifestError(f"no usable utterance: {silent} all-silent skipped, {part.dropped_too_long} over "
                            f"max_seconds={max_seconds:g} dropped", where=path,
                            fix="raise data.max_seconds, or point the config at a manifest with usable audio")
    kept_facts = [facts_of[u.audio_filepath] for u in part.kept]
    return Filtered(kept=part.kept, dropped_too_long=part.dropped_too_long, skipped_silent=silent,
                    resampled=sum(f.sample_rate != sample_rate for f in kept_facts),
                    downmixed=sum(f.channels > 1 for f in kept_facts),
                    sha256={u.audio_filepath: f.sha256 for u, f in zip(part.kept, kept_facts)}
                    ), [u.audio_filepath for u in utts]


TRAINING_SPLITS = ("train", "replay")  # data.on_silent applies to these; evaluation sets are scored whole


def load_splits(manifests: dict[str, str], data) -> dict[str, Filtered]:
    """load_split of every manifest a run reads ({split: path}, as RunSpec.manifests), with the
    run's data settings (`data`: a DataConf): data.on_silent for the training splits, refuse
    for the evaluation ones."""
    parts = {}
    for name, path in manifests.items():
        training = name in TRAINING_SPLITS
        parts[name] = load_split(
            path, max_seconds=data.max_seconds, sample_rate=data.sample_rate,
            on_silent=data.on_silent if training else "refuse",
            silent_fix="drop the line, or set data.on_silent=skip to skip and count all-silent utterances" if training
            else "drop the line: an evaluation manifest is scored whole (data.on_silent applies to training data)")
    return parts


@dataclass(frozen=True)
class Overlap:
    same_audio: int  # utterances whose audio file (bytes) is also in the other manifest
    same_text: int  # further utterances whose normalised transcript is also in the other manifest
    total: int

    def __bool__(self) -> bool:
        return bool(self.same_audio or self.same_text)


def overlap(train: Filtered, other: Filtered) -> Overlap:
    """How much of `other` (an evaluation split) the model also trains on, from `train`."""
    from orchestrator.data.textnorm import normalize

    audio = set(train.sha256.values()) | {u.audio_filepath for u in train.kept}
    texts = {normalize(u.text) for u in train.kept}
    same_audio = same_text = 0
    for u in other.kept:
        if u.audio_filepath in audio or other.sha256.get(u.audio_filepath) in audio:
            same_audio += 1
        elif normalize(u.text) in texts:
            same_text += 1
    return Overlap(same_audio, same_text, len(other.kept))


def manifest_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the manifest file's bytes (its identity in run specs)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        raise ManifestError("manifest not found", where=os.fspath(path),
                            fix="check the path") from None

