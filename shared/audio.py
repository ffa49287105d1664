"""PCM helpers shared by the gateway, the TTS service and the talk client (s16le mono unless said)."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_WIDTH = 2
ASR_SAMPLE_RATE = 16000

# soxr "HQ" is transparent for speech at a fraction of "VHQ"'s cost.
_QUALITY = "HQ"


def pcm_duration_ms(pcm: bytes, sample_rate: int) -> float:
    """Duration in milliseconds of s16le mono PCM at `sample_rate`."""
    return len(pcm) / (SAMPLE_WIDTH * sample_rate) * 1000.0


class StreamResampler:
    """Incremental s16le mono resampler whose output joins seamlessly across calls."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=_QUALITY)
        )
        # Network reads may split a sample in two; the odd byte waits for its partner.
        self._odd = b""

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Resample the next piece; `last=True` flushes the filter tail (once, at the end)."""
        if self._stream is None:
            return pcm
        data = self._odd + pcm
        whole = len(data) - len(data) % SAMPLE_WIDTH
        self._odd = b"" if last else data[whole:]
        samples = np.frombuffer(data[:whole], dtype="<i2")
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(samples, last=last)
        return out.astype("<i2", copy=False).tobytes()


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """One-shot resample of s16le mono PCM."""
    if in_rate == out_rate:
        return pcm
    return StreamResampler(in_rate, out_rate).process(pcm, last=True)


def to_mono16k(pcm: bytes, rate: int) -> bytes:
    """Resample s16le mono PCM to the 16 kHz the recognizer expects."""
    return resample(pcm, rate, ASR_SAMPLE_RATE)


def _to_int32_full_scale(raw: bytes, width: int) -> npt.NDArray[np.int32]:
    """Decode little-endian PCM ints of any WAV width, scaled so full scale is the int32 range."""
    if width == 1:
        # 8-bit WAV is the odd one out: unsigned, centred on 128.
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 24
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.int32) << 16
    if width == 3:
        # Place each 3-byte sample in the top of a 4-byte word; int32 then carries its sign.
        padded = np.zeros((len(raw) // 3, 4), dtype=np.uint8)
        padded[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        return padded.view("<i4").reshape(-1).astype(np.int32)
    if width == 4:
        return np.frombuffer(raw, dtype="<i4").astype(np.int32)
    raise ValueError(f"unsupported WAV sample width: {width * 8} bits")


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read an integer-PCM WAV (8/16/24/32-bit, any channels) as (s16le mono PCM, sample rate)."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        # Python 3.11's wave reads only plain PCM: float and WAVE_FORMAT_EXTENSIBLE files land here.
        raise ValueError(f"{path}: not an integer PCM WAV file ({exc})") from exc
    frame_size = channels * width
    raw = raw[: len(raw) - len(raw) % frame_size]  # a truncated file may end mid-frame
    samples = _to_int32_full_scale(raw, width).reshape(-1, channels)
    # Average rather than sum the channels so the mixdown cannot clip.
    mono = samples.astype(np.int64).sum(axis=1) // channels
    return (mono >> 16).astype("<i2").tobytes(), rate


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write s16le mono PCM as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def frames(pcm: bytes, frame_bytes: int) -> Iterator[bytes]:
    """Split PCM into frames of exactly `frame_bytes`, zero-padding the last one."""
    if frame_bytes <= 0:
        raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
    for start in range(0, len(pcm), frame_bytes):
        frame = pcm[start : start + frame_bytes]
        yield frame.ljust(frame_bytes, b"\0")
