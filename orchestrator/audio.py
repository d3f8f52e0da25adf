"""The one audio path: decode, down-mix to mono, resample, reject bad samples, RMS-normalise.

Every waveform the orchestrator trains or evaluates on comes through `load_audio`, so training
and evaluation can never disagree on preprocessing. Imports only numpy, soundfile and soxr.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from orchestrator.errors import AudioError

_FIX_PATH = "check the path or regenerate the manifest"
_FIX_FILE = "re-export the file as 16-bit PCM WAV or FLAC, or drop it from the manifest"


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        what = "audio path is a directory" if os.path.isdir(path) else "audio file not found"
        raise AudioError(what, where=path, fix=_FIX_PATH)


def audio_info(path: str | os.PathLike[str]) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels), read from the header only."""
    p = os.fspath(path)
    _check_exists(p)
    try:
        info = sf.info(p)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"cannot read audio header ({err})", where=p, fix=_FIX_FILE) from None
    return info.frames / info.samplerate, info.samplerate, info.channels


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    rms_target: float | None = 0.075,
) -> np.ndarray:
    """Decode `path` to a 1-D float32 waveform at `sample_rate`, RMS-normalised to `rms_target`.

    Raises AudioError for a missing, unreadable or empty file, non-finite samples, or silence.
    `rms_target` None or 0 skips normalisation (silence is still rejected).
    """
    p = os.fspath(path)
    _check_exists(p)
    try:
        data, file_rate = sf.read(p, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"cannot decode audio ({err})", where=p, fix=_FIX_FILE) from None

    if data.size == 0:
        raise AudioError("audio has no samples", where=p, fix="remove the utterance or re-record it")
    if data.ndim == 2:  # (frames, channels) -> mono
        data = data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(data).all():
        raise AudioError("audio contains NaN or infinite samples", where=p, fix=_FIX_FILE)
    if file_rate != sample_rate:
        data = soxr.resample(data, file_rate, sample_rate, quality="HQ")

    rms = float(np.sqrt(np.dot(data, data) / data.size))
    if rms == 0.0:
        raise AudioError("audio is silent (RMS is zero)", where=p, fix="remove the utterance from the manifest")
    if rms_target:
        data *= np.float32(rms_target / rms)
    return data
