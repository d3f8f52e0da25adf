"""The one audio path: real espeak speech plus hand-made edge-case files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from orchestrator.data.audio import audio_info, inspect_audio, load_audio
from orchestrator.errors import AudioError
from orchestrator.data.synth import synthesize


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _sine(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("speech")
    [row] = synthesize(["contact tower one one eight decimal seven"], out, prefix="a", jobs=1)
    return out / row["audio_filepath"]


def test_speech_is_normalised_mono_float32(speech_wav: Path) -> None:
    duration, rate, channels = audio_info(speech_wav)
    x = load_audio(speech_wav)
    assert (rate, channels) == (16000, 1)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == round(duration * 16000)
    assert _rms(x) == pytest.approx(0.075, rel=1e-3)


def test_stereo_44k1_becomes_mono_16k(tmp_path: Path) -> None:
    left = _sine(1.0, 44100, amp=0.5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, 0.2 * left], axis=1), 44100, subtype="PCM_16")
    assert audio_info(path) == (1.0, 44100, 2)

    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == 16000
    assert _rms(x) == pytest.approx(0.075, rel=1e-3)
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) * 16000 / len(x) == pytest.approx(440, abs=2)


def test_downmix_is_channel_mean_and_none_skips_normalisation(tmp_path: Path) -> None:
    a, b = _sine(0.5, 16000, amp=0.4), _sine(0.5, 16000, freq=1000, amp=0.1)
    path = tmp_path / "two.wav"
    sf.write(path, np.stack([a, b], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, rms_target=None), (a + b) / 2, atol=1e-7)
    np.testing.assert_allclose(load_audio(path, rms_target=0), (a + b) / 2, atol=1e-7)


def test_custom_rate_and_target(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    sf.write(path, _sine(0.5, 22050), 22050)
    x = load_audio(path, sample_rate=8000, rms_target=0.2)
    assert len(x) == 4000
    assert _rms(x) == pytest.approx(0.2, rel=1e-3)


def _error(path: Path) -> AudioError:
    with pytest.raises(AudioError) as info:
        load_audio(path)
    err = info.value
    assert err.where == str(path) and err.fix
    assert str(err).startswith(f"{path}: ")
    return err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_rejected(tmp_path: Path, bad: float) -> None:
    x = _sine(0.2, 16000)
    x[100] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    assert "NaN or infinite" in _error(path).what


def test_nan_in_one_stereo_channel_rejected(tmp_path: Path) -> None:
    x = np.stack([_sine(0.2, 44100), _sine(0.2, 44100)], axis=1)
    x[10, 1] = np.nan
    path = tmp_path / "bad_stereo.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    assert "NaN" in _error(path).what


def test_zero_byte_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert "cannot decode audio: the file is empty (0 bytes)" in _error(path).what
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        audio_info(path)
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        inspect_audio(path)


def test_header_only_wav_rejected(tmp_path: Path) -> None:
    path = tmp_path / "no_frames.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    assert audio_info(path)[0] == 0.0
    assert "no samples" in _error(path).what


def test_corrupt_header_rejected(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "cannot decode" in _error(path).what
    with pytest.raises(AudioError):
        audio_info(path)


def test_silence_rejected(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(8000, dtype=np.float32), 16000)
    assert "silent" in _error(path).what


def test_opposite_phase_stereo_is_silent(tmp_path: Path) -> None:
    x = _sine(0.2, 16000)
    path = tmp_path / "cancel.wav"
    sf.write(path, np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    assert "silent" in _error(path).what


def test_missing_file_and_directory(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.wav")
    assert "not found" in err.what and "check the path" in (err.fix or "")
    assert "directory" in _error(tmp_path).what
    with pytest.raises(AudioError, match="not found"):
        audio_info(tmp_path / "nope.wav")


def test_truncated_header_names_libsndfile_reason_without_repeating_the_path(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, _sine(0.5, 16000), 16000)
    path.write_bytes(path.read_bytes()[:20])  # RIFF header cut inside the fmt chunk
    with pytest.raises(AudioError) as info:
        inspect_audio(path)
    assert info.value.what.startswith("cannot read audio header (") and str(path) not in info.value.what


def test_overflowing_float_samples_are_refused_not_normalised_to_zero(tmp_path: Path) -> None:
    path = tmp_path / "huge.wav"
    sf.write(path, np.full(1600, 3e38, dtype=np.float32), 16000, subtype="FLOAT")
    assert "out of range" in _error(path).what
    with pytest.raises(AudioError, match="out of range"):
        inspect_audio(path)


def test_inspect_reports_native_format_silence_and_content_hash(tmp_path: Path) -> None:
    import hashlib

    stereo = tmp_path / "stereo.wav"
    x = _sine(0.5, 44100)
    sf.write(stereo, np.stack([x, x], axis=1), 44100, subtype="PCM_16")
    facts = inspect_audio(stereo)
    assert (facts.sample_rate, facts.channels, facts.frames) == (44100, 2, 22050)
    assert facts.duration == 0.5 and facts.rms > 0.3
    assert facts.sha256 == hashlib.sha256(stereo.read_bytes()).hexdigest()

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, dtype=np.float32), 16000)
    assert inspect_audio(silent).rms == 0.0  # reported, not raised: the caller's policy decides
    cancel = tmp_path / "cancel.wav"
    sf.write(cancel, np.stack([x, -x], axis=1), 44100, subtype="FLOAT")
    assert inspect_audio(cancel).rms == 0.0  # silent after the down-mix, as load_audio sees it


def test_load_audio_output_is_unchanged_by_the_refactor(speech_wav: Path, tmp_path: Path) -> None:
    """The audio cache keys entries on load_audio's output: mono and stereo decode as before."""
    data, rate = sf.read(speech_wav, dtype="float32")
    expected = data * np.float32(0.075 / float(np.sqrt(np.dot(data, data) / data.size)))
    np.testing.assert_array_equal(load_audio(speech_wav), expected)
