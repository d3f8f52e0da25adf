"""The one audio path: decode, down-mix to mono, resample, reject bad samples, RMS-normalise.

Every waveform the orchestrator trains or evaluates on comes through `load_audio`, so training
and evaluation can never disagree on preprocessing. `inspect_audio` decodes a file the same way
(without resampling or normalising) to tell, before a run starts, whether it is usable and what
the audio path will do to it. Imports only numpy, soundfile and soxr.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from orchestrator.errors import AudioError

_FIX_PATH = "check the path or regenerate the manifest"
_FIX_FILE = "re-export the file as 16-bit PCM WAV or FLAC, or drop it from the manifest"
_FIX_SILENT = "remove the utterance from the manifest"


@dataclass(frozen=True)
class AudioFacts:
    """What decoding a file found: its native format, the RMS of its mono down-mix (0.0 means
    all-silent) and the sha256 of its bytes (same bytes under two names = the same audio)."""

    frames: int
    sample_rate: int
    channels: int
    rms: float
    sha256: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _reason(err: BaseException) -> str:
    """libsndfile's own words without the "Error opening '<path>': " prefix (we name the path)."""
    text = getattr(err, "error_string", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        what = "audio path is a directory, not a file" if os.path.isdir(path) else "audio file not found"
        raise AudioError(what, where=path, fix=_FIX_PATH)
    if os.path.getsize(path) == 0:
        raise AudioError("cannot decode audio: the file is empty (0 bytes)", where=path,
                         fix="re-export the audio or drop the line")


def audio_info(path: str | os.PathLike[str]) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels), read from the header only."""
    p = os.fspath(path)
    _check_exists(p)
    try:
        info = sf.info(p)
    except Exception as err:  # noqa: BLE001 - libsndfile, cffi and OS errors alike: the file is unusable
        raise AudioError(f"cannot read audio header ({_reason(err)})", where=p, fix=_FIX_FILE) from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"header declares {info.samplerate} Hz and {info.channels} channels", where=p, fix=_FIX_FILE)
    return info.frames / info.samplerate, info.samplerate, info.channels


def _decode(path: str) -> tuple[np.ndarray, int]:
    """(mono float32 samples at the file's own rate, that rate); AudioError if unusable."""
    _check_exists(path)
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - see audio_info
        raise AudioError(f"cannot decode audio ({_reason(err)})", where=path, fix=_FIX_FILE) from None
    if data.size == 0:
        raise AudioError("audio has no samples", where=path, fix="remove the utterance or re-record it")
    if not np.isfinite(data).all():  # before the down-mix: NaN in one channel must not hide
        raise AudioError("audio contains NaN or infinite samples", where=path, fix=_FIX_FILE)
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(file_rate)


def _rms(x: np.ndarray) -> float:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow shows as inf: refused by the callers
        return float(np.sqrt(np.dot(x, x) / x.size))


def inspect_audio(path: str | os.PathLike[str]) -> AudioFacts:
    """Decode `path` through the one audio path (no resampling) and report what it holds.

    Raises AudioError for a missing, empty, unreadable or sample-less file and for NaN or
    infinite samples. Silence is reported (rms 0.0), not raised: callers decide what it means."""
    p = os.fspath(path)
    _, _, channels = audio_info(p)  # a bad header gets its own message
    mono, rate = _decode(p)
    rms = _rms(mono)
    if not np.isfinite(rms):
        raise AudioError("audio samples are out of range", where=p, fix=_FIX_FILE)
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return AudioFacts(frames=mono.size, sample_rate=rate, channels=channels, rms=rms, sha256=digest.hexdigest())


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    rms_target: float | None = 0.075,
) -> np.ndarray:
    """Decode `path` to a 1-D float32 waveform at `sample_rate`, RMS-normalised to `rms_target`.

    Raises AudioError for a missing, unreadable or empty file, non-finite samples, or silence
    (RMS zero: there is nothing to normalise, and no division by zero happens).
    `rms_target` None or 0 skips normalisation (silence is still rejected).
    """
    p = os.fspath(path)
    data, file_rate = _decode(p)
    if file_rate != sample_rate:
        try:
            data = soxr.resample(data, file_rate, sample_rate, quality="HQ")
        except Exception as err:  # noqa: BLE001 - e.g. a rate soxr refuses
            raise AudioError(f"cannot resample {file_rate} Hz to {sample_rate} Hz ({_reason(err)})", where=p,
                             fix=_FIX_FILE) from None
        data = np.ascontiguousarray(data, dtype=np.float32)
    if data.size == 0:
        raise AudioError(f"audio is too short to resample to {sample_rate} Hz", where=p,
                         fix="remove the utterance or re-record it")

    rms = _rms(data)
    if rms == 0.0:
        raise AudioError("audio is silent (RMS is zero)", where=p, fix=_FIX_SILENT)
    if not np.isfinite(rms):  # finite samples whose squares overflow float32: not real audio
        raise AudioError("audio samples are out of range", where=p, fix=_FIX_FILE)
    if rms_target:
        data *= np.float32(rms_target / rms)
    return data
