"""Failures inside a service on a real Redis, with fake engines: a failing handler is retried, then its
entry is dead-lettered with its payload and the user gets an `error` (never silence), and the service
goes on serving others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import REGISTRY

from services.asr import service as asr_service
from services.asr.endpointer import Endpointer
from services.asr.service import AsrService
from services.asr.session import SessionTranscriber
from services.asr.settings import AsrSettings
from services.llm.engine import ChatMessage, GenerationOptions, Usage
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from services.tts.service import TtsService
from services.tts.settings import TtsSettings
from shared import keys
from shared.bus import Bus, WorkQueue
from shared.schema import (
    AudioChunk,
    AudioFrame,
    Message,
    PhraseAudioDone,
    ReplyDone,
    ReplyPhrase,
    ReplyRequested,
    ServiceError,
    SessionOpened,
    decode,
)
from shared.worker import QueueWorker
from tests.eventually import eventually, output_until

pytestmark = pytest.mark.integration

STREAM = "vm:test:poison"


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("voxmesh_messages_dropped_total", {"reason": reason}) or 0.0


def _ask(session_id: str, turn_id: int = 0) -> ReplyRequested:
    return ReplyRequested(session_id=session_id, turn_id=turn_id, seq=0, text="Hello?", speech_ended_at=0)


@contextlib.asynccontextmanager
async def serving(run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def test_a_poison_entry_is_retried_three_times_then_dead_lettered_with_its_payload(bus: Bus) -> None:
    tries: dict[str, int] = {}
    told: list[Message] = []

    async def handle(message: Message) -> None:
        tries[message.session_id] = tries.get(message.session_id, 0) + 1
        if message.session_id == "poison":
            raise ValueError("cannot handle this one")

    async def on_failure(message: Message) -> None:
        told.append(message)

    queue = WorkQueue(bus, STREAM, "workers", "c", label="test", block_ms=100)
    worker = QueueWorker(queue, handle, fence=None, on_failure=on_failure)
    dropped_before = _dropped("handler_failed")
    poison = _ask("poison")
    async with serving(worker.run):
        await bus.send(STREAM, poison)
        await bus.send(STREAM, _ask("fine"))
        await eventually(lambda: tries.get("fine") == 1 and bool(told), within=10)
    await queue.close()

    assert tries == {"poison": 4, "fine": 1}, "one try and three retries, and the next entry is served"
    assert [m.session_id for m in told] == ["poison"]
    assert _dropped("handler_failed") == dropped_before + 1
    assert (await bus.redis.xpending(STREAM, "workers"))["pending"] == 0
    dead: Any = await bus.redis.xrange(keys.DEAD_LETTERS)
    [(_, fields)] = dead
    assert fields[b"stream"] == STREAM.encode() and fields[b"reason"] == b"handler_failed"
    kept = decode(fields)
    assert isinstance(kept, ReplyRequested) and kept == poison, "the payload is kept, ready to replay"


class BrokenGenerator:
    """Fails the way a bug does (not a GenerationError)."""

    name = "broken"

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        usage: Usage | None = None,
    ) -> AsyncIterator[str]:
        yield "Paris"
        raise KeyError("candidates")

    async def aclose(self) -> None:
        pass


async def test_an_unexpected_llm_error_ends_the_turn_with_an_error(bus: Bus) -> None:
    settings = LlmSettings(consumer_name="t", first_phrase_yield_ms=0)
    service = LlmService(settings, bus, BrokenGenerator())
    async with serving(service.run):
        await bus.send(keys.LLM_REQUESTS, _ask("llm-bug", 0))
        out = await output_until(bus, "llm-bug", lambda m: isinstance(m, ServiceError | ReplyDone), 10)
    assert isinstance(out[-1], ServiceError) and out[-1].code == "turn_failed" and out[-1].turn_id == 0


class FlakySynthesizer:
    """Speaks one chunk, then fails, `failures` times; then speaks whole phrases."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        yield b"\x01\x00" * 160
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("voice crashed")
        yield b"\x02\x00" * 160


def _phrase(session_id: str) -> ReplyPhrase:
    return ReplyPhrase(session_id=session_id, turn_id=0, seq=0, text="Paris.", output_sample_rate=16_000)


async def _speak(bus: Bus, synthesizer: FlakySynthesizer, session_id: str) -> list[Message]:
    service = TtsService(TtsSettings(consumer_name="t"), bus, synthesizer)
    async with serving(service.run):
        await bus.send(keys.TTS_REQUESTS, _phrase(session_id))
        return await output_until(
            bus, session_id, lambda m: isinstance(m, ServiceError | PhraseAudioDone), 10
        )


async def test_a_phrase_that_fails_mid_synthesis_is_spoken_again(bus: Bus) -> None:
    out = await _speak(bus, FlakySynthesizer(failures=1), "tts-flaky")
    assert isinstance(out[-1], PhraseAudioDone) and out[-1].chunk_count == 2
    chunks = {(m.seq, bytes(m.audio)) for m in out if isinstance(m, AudioChunk)}
    assert chunks == {(0, b"\x01\x00" * 160), (1, b"\x02\x00" * 160)}, "a repeated chunk is the same chunk"


async def test_a_phrase_that_keeps_failing_ends_the_turn_with_an_error(bus: Bus) -> None:
    out = await _speak(bus, FlakySynthesizer(failures=100), "tts-broken")
    assert isinstance(out[-1], ServiceError) and out[-1].code == "turn_failed"


class LoudnessDetector:
    """Voice activity by loudness: any sample over 0.1 of full scale is speech."""

    window_samples = 320

    def speech_probability(self, window: npt.NDArray[np.float32]) -> float:
        return 1.0 if float(np.abs(window).max()) > 0.1 else 0.0

    def reset(self) -> None:
        pass


class BrokenRecognizer:
    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        raise RuntimeError("decoder crashed")


async def test_an_asr_failure_tells_the_session_instead_of_going_silent(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asr_service, "SileroDetector", LoudnessDetector)
    settings = AsrSettings(
        consumer_name="t", turn_policy=False, speculative_final=False, partial_interval_ms=0
    )
    service = AsrService(settings, bus, BrokenRecognizer())
    sid = "asr-broken"
    loud, quiet = np.full(320, 8000, "<i2").tobytes(), bytes(640)
    frames = [loud] * 25 + [quiet] * 40  # half a second of "speech", then silence ends it
    for seq, pcm in enumerate(frames):
        await bus.send_to_session(
            keys.audio_in(sid), AudioFrame(session_id=sid, turn_id=0, seq=seq, audio=pcm)
        )
    async with serving(service.run):
        await bus.send(keys.ASR_DISPATCH, SessionOpened(session_id=sid, turn_id=0, seq=0))
        out = await output_until(bus, sid, lambda m: isinstance(m, ServiceError), 15)
    error: Any = out[-1]
    assert error.code == "session_failed"


async def test_an_asr_session_whose_audio_stops_for_good_is_given_up(bus: Bus) -> None:
    """A gateway that crashed never sends SessionClosed: the session's transcription must not run on."""
    sid = "asr-orphan"
    transcriber = SessionTranscriber(
        bus, sid, BrokenRecognizer(), Endpointer(LoudnessDetector()), speculate=False, idle_timeout_s=0.5
    )
    await asyncio.wait_for(transcriber.run(), timeout=5)
    out = await output_until(bus, sid, lambda m: isinstance(m, ServiceError), 1)
    error: Any = out[-1]
    assert error.code == "session_failed"
