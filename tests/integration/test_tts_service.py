"""The TTS service on real Redis and the real piper voice: a cancel stops the phrase being spoken and
the phrases still queued for the stale turn are dropped without being synthesized."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from services.tts.service import TtsService
from services.tts.settings import TtsSettings
from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import AudioChunk, Message, PhraseAudioDone, ReplyPhrase
from shared.turns import open_turn

pytestmark = pytest.mark.integration

LONG_PHRASE = " ".join(["The moon has no air, no weather and no sound, and its days last two weeks."] * 6)


def _metric(name: str, queue: str) -> float:
    return REGISTRY.get_sample_value(name, {"queue": queue}) or 0.0


async def test_cancel_stops_the_phrase_in_synthesis_and_drops_queued_ones(bus: Bus) -> None:
    session = "tts-cancel"
    await bus.redis.set(keys.turn_counter(session), 1)
    phrases = [
        ReplyPhrase(session_id=session, turn_id=1, seq=seq, text=LONG_PHRASE, output_sample_rate=16_000)
        for seq in range(4)
    ]
    for phrase in phrases:
        await bus.send(keys.TTS_REQUESTS, phrase)
    aborted_before = _metric("voxmesh_jobs_aborted_total", "tts_requests")
    stops_before = _metric("voxmesh_cancel_stop_seconds_count", "tts_requests")
    dropped_before = (
        REGISTRY.get_sample_value("voxmesh_messages_dropped_total", {"reason": "stale_turn"}) or 0
    )

    service = TtsService(TtsSettings(consumer_name="t", redis_url=bus.url), bus)
    await service.load()
    stop = asyncio.Event()
    out = StreamTail(bus, keys.session_out(session), label="test", block_ms=100)
    seen: list[Message] = []
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            async with asyncio.timeout(30):
                while not any(isinstance(m, AudioChunk) for m in seen):
                    seen += [d.message for d in await out.read()]
            await open_turn(bus.redis, session)  # the user talks over the reply: turn 2
            await asyncio.sleep(1.5)  # room for anything that still would be synthesized
            seen += [d.message for d in await out.read()]
            stop.set()
    finally:
        await out.close()

    chunks = [m for m in seen if isinstance(m, AudioChunk)]
    assert {c.phrase_seq for c in chunks} == {0}, "no phrase queued behind the cancelled one was spoken"
    assert not [m for m in seen if isinstance(m, PhraseAudioDone)], "the phrase in synthesis never completed"
    assert _metric("voxmesh_jobs_aborted_total", "tts_requests") == aborted_before + 1
    assert _metric("voxmesh_cancel_stop_seconds_count", "tts_requests") == stops_before + 1
    dropped = REGISTRY.get_sample_value("voxmesh_messages_dropped_total", {"reason": "stale_turn"}) or 0
    assert dropped == dropped_before + 3
    assert await bus.redis.xpending(keys.TTS_REQUESTS, keys.TTS_GROUP) == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }, "every entry was acked: none left for another replica to speak"  # fmt: skip


class RecordingSynthesizer:
    """Says nothing; remembers what it was asked to say."""

    native_rate = 16_000

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        self.texts.append(text)
        yield b"\0\0" * 160

    async def aclose(self) -> None:
        return None


async def test_the_voice_gets_the_speakable_form_of_the_phrase(bus: Bus) -> None:
    synthesizer = RecordingSynthesizer()
    service = TtsService(TtsSettings(consumer_name="t", redis_url=bus.url), bus, synthesizer)
    phrase = ReplyPhrase(
        session_id="tts-speakable",
        turn_id=0,
        seq=0,
        text="**Yes!** It costs $5 🙂",
        output_sample_rate=16_000,
    )
    await service.speak(phrase)
    assert synthesizer.texts == ["Yes! It costs five dollars"]
