"""Cut a recording where its speech ends, by energy, so trailing silence never hides latency."""

from __future__ import annotations

import numpy as np

from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH

FRAME_MS = 20
THRESHOLD_DB = -35.0
TAIL_MS = 30


def speech_end(
    pcm: bytes,
    sample_rate: int = ASR_SAMPLE_RATE,
    *,
    threshold_db: float = THRESHOLD_DB,
    frame_ms: int = FRAME_MS,
    tail_ms: int = TAIL_MS,
) -> int:
    """Sample index just past the speech: the end of the last frame whose RMS is within `threshold_db`
    of the loudest frame's, plus `tail_ms`; raises ValueError when there is no sound at all."""
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError("pcm must hold whole 16-bit samples")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frame = max(1, sample_rate * frame_ms // 1000)
    padded = np.zeros(-(-len(samples) // frame) * frame)
    padded[: len(samples)] = samples
    rms = np.sqrt(np.mean(padded.reshape(-1, frame) ** 2, axis=1)) if len(samples) else padded
    peak = float(rms.max()) if len(rms) else 0.0
    if peak <= 0.0:
        raise ValueError("the recording is silent: no speech to cut at")
    loud = np.flatnonzero(rms >= peak * 10.0 ** (threshold_db / 20.0))
    return min(len(samples), (int(loud[-1]) + 1) * frame + sample_rate * tail_ms // 1000)


def cut_at_speech_end(pcm: bytes, sample_rate: int = ASR_SAMPLE_RATE) -> bytes:
    """`pcm` (s16le mono) up to the end of its speech, keeping a short tail; see `speech_end`."""
    return pcm[: speech_end(pcm, sample_rate) * SAMPLE_WIDTH]
