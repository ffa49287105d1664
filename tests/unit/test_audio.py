"""PCM helpers: resampling math, framing and WAV decoding."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from shared.audio import (
    SAMPLE_WIDTH,
    StreamResampler,
    frames,
    pcm_duration_ms,
    read_wav,
    resample,
    to_mono16k,
    write_wav,
)

pytestmark = pytest.mark.unit


def _sine(freq: float, rate: int, seconds: float = 1.0, amplitude: int = 12000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def _samples(pcm: bytes) -> npt.NDArray[np.int32]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


def _peak_hz(pcm: bytes, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(_samples(pcm)))
    return float(np.argmax(spectrum) * rate / len(_samples(pcm)))


def _write_raw_wav(path: Path, channels: int, width: int, rate: int, raw: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(raw)


def test_duration_counts_16_bit_samples() -> None:
    assert pcm_duration_ms(b"\0" * 32000, 16000) == 1000.0
    assert pcm_duration_ms(b"\0" * 441 * SAMPLE_WIDTH, 22050) == pytest.approx(20.0)
    assert pcm_duration_ms(b"", 16000) == 0.0


def test_one_second_at_22050_becomes_16000_samples_at_same_pitch() -> None:
    out = resample(_sine(440, 22050), 22050, 16000)
    assert abs(len(out) // SAMPLE_WIDTH - 16000) <= 2
    assert _peak_hz(out, 16000) == pytest.approx(440, abs=2)


def test_upsampling_keeps_duration() -> None:
    out = resample(_sine(300, 16000, seconds=0.5), 16000, 48000)
    assert pcm_duration_ms(out, 48000) == pytest.approx(500, abs=1)


def test_same_rate_is_identity() -> None:
    pcm = _sine(440, 16000, seconds=0.1)
    assert resample(pcm, 16000, 16000) is pcm
    assert StreamResampler(16000, 16000).process(pcm) is pcm


def test_to_mono16k_resamples_to_16000() -> None:
    out = to_mono16k(_sine(440, 48000), 48000)
    assert abs(len(out) // SAMPLE_WIDTH - 16000) <= 2


@pytest.mark.parametrize("piece", [1000, 333, 4097])  # odd sizes split samples between calls
def test_streaming_matches_one_shot(piece: int) -> None:
    pcm = _sine(440, 22050) + _sine(880, 22050, seconds=0.5)
    stream = StreamResampler(22050, 16000)
    parts = [stream.process(pcm[i : i + piece]) for i in range(0, len(pcm), piece)]
    streamed = b"".join(parts) + stream.process(b"", last=True)
    whole = resample(pcm, 22050, 16000)
    assert all(len(p) % SAMPLE_WIDTH == 0 for p in parts)
    assert abs(len(streamed) - len(whole)) <= 2 * SAMPLE_WIDTH
    n = min(len(streamed), len(whole)) // SAMPLE_WIDTH
    assert np.max(np.abs(_samples(streamed)[:n] - _samples(whole)[:n])) <= 4


def test_rejects_non_positive_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)


def test_frames_pads_only_the_last_frame() -> None:
    assert list(frames(b"abcdefghij", 4)) == [b"abcd", b"efgh", b"ij\0\0"]
    assert list(frames(b"abcdefgh", 4)) == [b"abcd", b"efgh"]
    assert list(frames(b"", 4)) == []
    with pytest.raises(ValueError):
        list(frames(b"ab", 0))


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    pcm = _sine(440, 24000, seconds=0.2)
    write_wav(tmp_path / "a.wav", pcm, 24000)
    assert read_wav(tmp_path / "a.wav") == (pcm, 24000)


def test_reads_stereo_8_bit_unsigned_and_averages_channels(tmp_path: Path) -> None:
    left, right = [128, 255, 0, 200], [128, 255, 0, 56]
    raw = bytes(v for pair in zip(left, right, strict=True) for v in pair)
    _write_raw_wav(tmp_path / "u8.wav", 2, 1, 8000, raw)
    pcm, rate = read_wav(tmp_path / "u8.wav")
    assert rate == 8000
    assert _samples(pcm).tolist() == [0, 127 * 256, -32768, 0]


def test_reads_stereo_24_bit(tmp_path: Path) -> None:
    left = [0, 8388607, -8388608, 256 * 1000, 256 * 1234]
    right = [0, 8388607, -8388608, -256 * 1000, 256 * 1234]
    interleaved = [v for pair in zip(left, right, strict=True) for v in pair]
    raw = b"".join(v.to_bytes(3, "little", signed=True) for v in interleaved)
    _write_raw_wav(tmp_path / "s24.wav", 2, 3, 44100, raw)
    pcm, rate = read_wav(tmp_path / "s24.wav")
    assert rate == 44100
    assert _samples(pcm).tolist() == [0, 32767, -32768, 0, 1234]


def test_reads_stereo_16_bit(tmp_path: Path) -> None:
    raw = struct.pack("<6h", 1000, 3000, -2000, -4000, 32767, 32767)
    _write_raw_wav(tmp_path / "s16.wav", 2, 2, 16000, raw)
    pcm, _ = read_wav(tmp_path / "s16.wav")
    assert _samples(pcm).tolist() == [2000, -3000, 32767]


def test_reads_32_bit_and_three_channels(tmp_path: Path) -> None:
    raw = struct.pack("<6i", 65536 * 300, 65536 * 600, 65536 * 900, -65536, -65536, -65536)
    _write_raw_wav(tmp_path / "s32.wav", 3, 4, 16000, raw)
    pcm, _ = read_wav(tmp_path / "s32.wav")
    assert _samples(pcm).tolist() == [600, -1]


def test_non_wav_file_is_a_clear_value_error(tmp_path: Path) -> None:
    (tmp_path / "notes.wav").write_text("this is not audio")
    with pytest.raises(ValueError, match="not an integer PCM WAV"):
        read_wav(tmp_path / "notes.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="not an integer PCM WAV"):
        read_wav(tmp_path / "empty.wav")


def test_float_wav_is_a_clear_value_error(tmp_path: Path) -> None:
    data = struct.pack("<2f", 0.5, -0.5)
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 16000 * 4, 4, 32)  # format tag 3: IEEE float
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "float.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(ValueError, match="not an integer PCM WAV"):
        read_wav(tmp_path / "float.wav")
