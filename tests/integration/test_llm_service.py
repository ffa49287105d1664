"""The LLM service loop on real Redis with the real google-genai SDK against a local Gemini look-alike."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from shared import keys
from shared.bus import Bus, StreamTail
from shared.history import HistoryEntry, append_history
from shared.schema import Message, ReplyDone, ReplyPhrase, ReplyRequested, ServiceError
from shared.turns import open_turn
from tests.fake_gemini import FakeGeminiServer

pytestmark = pytest.mark.integration

REPLY = "Paris is the capital of France, and it is lovely in spring. It has the Eiffel Tower."


async def _collect_until_done(bus: Bus, session_id: str) -> list[Message]:
    tail = StreamTail(bus, keys.session_out(session_id), label="test", block_ms=200)
    seen: list[Message] = []
    try:
        async with asyncio.timeout(20):
            while not any(isinstance(m, ReplyDone | ServiceError) for m in seen):
                seen += [d.message for d in await tail.read()]
    finally:
        await tail.close()
    return seen


async def _run_service(bus: Bus, server: FakeGeminiServer, stop: asyncio.Event) -> None:
    settings = LlmSettings(
        gemini_api_key=SecretStr(server.api_key), gemini_base_url=server.base_url, consumer_name="t"
    )
    service = LlmService(settings, bus)
    await service.load()
    await service.run(stop)


def _ask(session_id: str, turn_id: int, text: str) -> ReplyRequested:
    return ReplyRequested(session_id=session_id, turn_id=turn_id, seq=0, text=text, speech_ended_at=0)


async def _answer(bus: Bus, server: FakeGeminiServer, *requests: ReplyRequested) -> list[Message]:
    """Run the service, send the requests, return the session's output up to the reply's end."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(_run_service(bus, server, stop))
        for request in requests:
            await bus.send(keys.LLM_REQUESTS, request)
        try:
            return await _collect_until_done(bus, requests[-1].session_id)
        finally:
            stop.set()


async def test_gemini_reply_streams_phrases_to_tts_and_gateway(bus: Bus) -> None:
    with FakeGeminiServer(reply=REPLY) as server:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(_run_service(bus, server, stop))
            request = ReplyRequested(
                session_id="s1", turn_id=0, seq=0, text="Capital of France?", speech_ended_at=0
            )
            await bus.send(keys.LLM_REQUESTS, request)
            out = await _collect_until_done(bus, "s1")
            # A second turn sees the history the gateway wrote: an interrupted reply as heard.
            await append_history(
                bus.redis,
                "s1",
                [
                    HistoryEntry(role="user", text="Capital of France?", turn_id=0),
                    HistoryEntry(role="assistant", text="Paris is the", turn_id=0, interrupted=True),
                ],
            )
            follow_up = request.model_copy(update={"text": "And Spain?", "instructions": "Be brief."})
            await bus.send(keys.LLM_REQUESTS, follow_up)
            await asyncio.sleep(0)
            await _collect_until_done(bus, "s1")
            stop.set()

    phrases = [m for m in out if isinstance(m, ReplyPhrase)]
    assert len(phrases) >= 2, "the reply is split into several speakable phrases"
    assert [p.seq for p in phrases] == list(range(len(phrases)))
    done = [m for m in out if isinstance(m, ReplyDone)]
    assert done and done[0].phrase_count == len(phrases)
    tts_queue = await bus.redis.xlen(keys.TTS_REQUESTS)
    assert tts_queue >= len(phrases)
    second_body = str(server.requests[-1].body)
    assert "Capital of France?" in second_body and "And Spain?" in second_body
    assert "Paris is the…" in second_body, "the interrupted reply is seen only as far as it was heard"
    assert "lovely in spring" not in second_body
    assert "Be brief." in second_body, "the session's instructions join the system prompt"


@pytest.mark.parametrize("status", [429, 503])
async def test_gemini_failure_becomes_an_error_event(bus: Bus, status: int) -> None:
    with FakeGeminiServer(fail_status=status) as server:
        out = await _answer(bus, server, _ask("s2", 0, "Hello?"))
    errors = [m for m in out if isinstance(m, ServiceError)]
    assert errors and errors[0].code == "turn_failed"
    assert str(status) in errors[0].message and server.api_key not in errors[0].message


async def test_request_of_a_stale_turn_is_not_answered(bus: Bus) -> None:
    with FakeGeminiServer(reply=REPLY) as server:
        await open_turn(bus.redis, "s3")  # the user already spoke again: turn 1
        out = await _answer(bus, server, _ask("s3", 0, "old"), _ask("s3", 1, "new"))
    assert {m.turn_id for m in out} == {1}
    assert len(server.requests) == 1
