"""Read and validate JSONL manifests into `Utterance`s; screen their audio; hash for identity.

The rules are written once, in manifest_rules.py; this module applies them three ways:
`read_manifest` checks every line and stops at the first problem (headers only, cheap);
`check_lines` adds what needs no decoding (duplicate files, "duration" against the header, text
without words); `load_split` is what a run reads: it also decodes every audio file once through
the one audio path and refuses what cannot be trained or scored on, before torch loads and
before the registry gets a row (`load_splits` applies a run's data settings to its manifests);
`validate_manifest` lists every problem with its line. Comparing manifests (overlap, shared
speakers, orthography): manifest_compare.py. Stats and expansion: manifest_tools.py.

A manifest line is `{"audio_filepath": "...", "text": "...", "duration": 1.23, "speaker": "s1"}`
(duration optional: read from the audio header when absent; speaker optional; `audio` is
accepted for `audio_filepath`, as the upstream Moonshine trainer writes it). Every problem is a
ManifestError whose `where` is `manifest:line`, so the user can jump straight to it.

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
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from orchestrator.data import manifest_rules as rules
from orchestrator.data.audio import AudioFacts
from orchestrator.data.manifest_rules import DURATION_TOLERANCE, Problem
from orchestrator.errors import ManifestError


@dataclass(frozen=True)
class Utterance:
    audio_filepath: str  # absolute, normalised
    text: str
    duration: float  # seconds
    line: int  # 1-based line in the manifest
    speaker: str | None = None  # the line's "speaker", when it has one


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


def _rows(path: str) -> Iterator[tuple[rules.Row | None, list[Problem]]]:
    """parse_line of every non-blank line (a line that is not UTF-8 counts as non-blank)."""
    _require_file(path)
    manifest_dir = os.path.dirname(os.path.abspath(path))
    for lineno, raw_line in _lines(path):
        if raw_line is None or raw_line.strip():
            yield rules.parse_line(lineno, raw_line, manifest_dir)


_NO_UTTERANCES = "manifest has no utterances"


# --- stop at the first problem -------------------------------------------------------------------

def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """All utterances of the JSONL manifest at `path`, validated; blank lines are skipped.

    Stops at the first problem; `validate_manifest` lists them all."""
    path = os.fspath(path)
    utts: list[Utterance] = []
    for row, problems in _rows(path):
        if problems:
            raise problems[0].error(path)
        duration = row.duration
        if duration is None:
            duration, unreadable = rules.header_duration(row.line, row.audio)
            if unreadable:
                raise unreadable[0].error(path)
        utts.append(Utterance(audio_filepath=row.audio, text=row.text, duration=float(duration), line=row.line,
                              speaker=row.speaker))
    if not utts:
        raise ManifestError(_NO_UTTERANCES, where=path,
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


def check_lines(path: str | os.PathLike[str], *, tolerance: float = DURATION_TOLERANCE) -> list[Utterance]:
    """read_manifest plus every check that needs no decoding, stopping at the first problem:
    text without words, the same audio file twice, an unreadable audio header, a "duration"
    that disagrees with the header. Cheap (headers only): the CLI runs it before loading torch."""
    path = os.fspath(path)
    utts = read_manifest(path)
    first_by_path: dict[str, int] = {}
    for u in utts:
        duplicate = rules.duplicate_file(u.line, u.audio_filepath, first_by_path)
        problems = [*rules.text_problems(u.line, u.text), *([duplicate] if duplicate else [])]
        problems = problems or rules.header_problems(u.line, u.audio_filepath, u.duration, tolerance)
        if problems:
            raise problems[0].error(path)
    return utts


# --- list every problem ----------------------------------------------------------------------------

class ManifestProblem(ManifestError):
    """One finding of `validate_manifest`: severity "error" (unusable) or "info" (usable as is:
    the one audio path will resample or down-mix it; or what the manifest holds, e.g. speakers)."""

    def __init__(self, what: str, *, path: str, line: int | None = None, fix: str | None = None,
                 severity: str = "error", field: str | None = None, code: str = "invalid"):
        super().__init__(what, where=f"{path}:{line}" if line else path, fix=fix)
        self.path, self.line, self.severity, self.field, self.code = path, line, severity, field, code

    @classmethod
    def of(cls, problem: Problem, path: str) -> ManifestProblem:
        return cls(problem.what, path=path, line=problem.line, fix=problem.fix, severity=problem.severity,
                   field=problem.field, code=problem.code)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def report_line(self) -> str:
        """`file:line: what (fix: ...)`; infos read `file:line: info: what`."""
        return self.one_line() if self.is_error else f"{self.where}: info: {self.what}"


def validate_manifest(path: str | os.PathLike[str], *, sample_rate: int = 16000,
                      tolerance: float = DURATION_TOLERANCE) -> list[ManifestProblem]:
    """Every problem of the manifest at `path`, in line order, each naming its line.

    Checks each line (UTF-8, JSON object, fields, audio found), decodes each audio file through
    the one audio path (unreadable, empty, NaN/inf, silent), compares "duration" with the audio,
    and flags duplicates (same file or same bytes as an earlier line). Audio that is not
    `sample_rate` or not mono is an info, not an error; so is the count of speakers, when lines
    name them. A missing manifest raises ManifestError.
    """
    path = os.fspath(path)
    found: list[Problem] = []
    first_by_path: dict[str, int] = {}
    first_by_hash: dict[str, int] = {}
    speakers: Counter[str] = Counter()
    utterances = 0
    for row, problems in _rows(path):
        utterances += 1
        found += problems
        if row is None:
            continue
        found += rules.text_problems(row.line, row.text)
        if row.speaker:
            speakers[row.speaker] += 1
        if row.audio is None:
            continue
        duplicate = rules.duplicate_file(row.line, row.audio, first_by_path)
        if duplicate:
            found.append(duplicate)
            continue
        found += rules.audio_problems(row.line, row.audio, row.duration, sample_rate=sample_rate,
                                      tolerance=tolerance, first_by_hash=first_by_hash)[1]
    if not utterances:
        found.append(Problem(None, None, _NO_UTTERANCES, "add at least one JSON line"))
    if speakers:
        found.append(Problem(None, "speaker", speaker_summary(speakers), None, "info", code="speakers"))
    return [ManifestProblem.of(p, path) for p in found]


def speaker_summary(speakers: Counter[str], shown: int = 5) -> str:
    """`3 speakers (utterances each: s1 4, s2 3, s3 1)`: the most frequent `shown` by name."""
    top = ", ".join(f"{name} {count}" for name, count in speakers.most_common(shown))
    more = f", ... {len(speakers) - shown} more" if len(speakers) > shown else ""
    return f"{len(speakers)} speaker{'s' if len(speakers) != 1 else ''} (utterances each: {top}{more})"


def filter_by_duration(utts: list[Utterance], max_seconds: float) -> Filtered:
    """Keep utterances no longer than `max_seconds`; count the rest."""
    kept = [u for u in utts if u.duration <= max_seconds]
    return Filtered(kept=kept, dropped_too_long=len(utts) - len(kept))


# --- what a run reads: every line checked, every audio file decoded once -------------------------

SILENT_POLICIES = ("skip", "refuse")
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
        facts, problems = rules.audio_problems(u.line, u.audio_filepath, u.duration, sample_rate=sample_rate,
                                               tolerance=tolerance, first_by_hash=first_by_hash)
        # what a run refuses: every error but near-silent audio (kept: load_audio normalises it)
        refused = [p for p in problems if p.severity == "error" and p.code != "near_silent"]
        if refused and refused[0].code == "silent":
            if on_silent == "skip":
                silent += 1
                continue
            refused[0] = rules.Problem(u.line, None, refused[0].what, silent_fix or "drop the line", audio=True,
                                       code="silent")
        if refused:
            raise refused[0].error(path)
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
    for the evaluation ones; data.speaker_overlap=refuse refuses an evaluation manifest that
    shares speakers with the training one (manifest_compare.py)."""
    parts = {}
    for name, path in manifests.items():
        training = name in TRAINING_SPLITS
        parts[name] = load_split(
            path, max_seconds=data.max_seconds, sample_rate=data.sample_rate,
            on_silent=data.on_silent if training else "refuse",
            silent_fix="drop the line, or set data.on_silent=skip to skip and count all-silent utterances" if training
            else "drop the line: an evaluation manifest is scored whole (data.on_silent applies to training data)")
    from orchestrator.data.manifest_compare import refuse_shared_speakers

    refuse_shared_speakers(parts, manifests, getattr(data, "speaker_overlap", "warn"), TRAINING_SPLITS)
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

