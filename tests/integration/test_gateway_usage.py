"""Session usage on a real Redis: a scripted conversation through the gateway session, the LLM service (on the
local OpenAI look-alike) and a TTS service with a silent voice; `session.usage` carries the server's own
figures; a discarded speculation adds nothing; the token budget switches to economy or refuses replies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.gateway.session import GatewaySession
from services.gateway.settings import GatewaySettings
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from services.tts.service import TtsService
from services.tts.settings import TtsSettings
from shared import keys
from shared.bus import Bus, WorkQueue
from shared.schema import (
    Message,
    ReplyUsage,
    SpeechResumed,
    SpeechStarted,
    TranscriptFinal,
    TranscriptSpeculative,
)
from tests.eventually import eventually
from tests.fake_openai import FakeOpenAIServer
from tests.gateway_support import next_request
from tests.integration.test_gateway_failures import FakeSocket

pytestmark = pytest.mark.integration

KEY = "sk-usage"
SECOND = 16_000 * 2  # bytes of one second of 16 kHz audio
PHRASE_AUDIO = b"\0\0" * 1_600  # 0.1 s of reply audio per phrase


class SilentVoice:
    """Speaks every phrase as 0.1 s of silence."""

    native_rate = 16_000

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        yield PHRASE_AUDIO

    async def aclose(self) -> None:
        return None


@asynccontextmanager
async def session_running(
    bus: Bus, settings: GatewaySettings | None = None
) -> AsyncIterator[tuple[GatewaySession, FakeSocket]]:
    socket = FakeSocket()
    session = GatewaySession(socket, bus, settings or GatewaySettings(), 16_000)  # type: ignore[arg-type]
    task = asyncio.create_task(session.run())
    try:
        await eventually(lambda: bool(socket.saw("session.started")))
        await take_asr_session(bus)
        yield session, socket
    finally:
        socket.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, timeout=10)


async def take_asr_session(bus: Bus) -> None:
    """An ASR replica takes the session (none runs here; the transcripts come from the test)."""
    asr = WorkQueue(bus, keys.ASR_DISPATCH, keys.ASR_GROUP, "fake-asr", label="test", block_ms=100)
    await asr.ensure_group()
    try:
        async with asyncio.timeout(5):
            while not await asr.read():
                pass
    finally:
        await asr.close()


def client_says(socket: FakeSocket, event: dict[str, Any]) -> None:
    socket.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(event)})


async def from_asr(bus: Bus, session: GatewaySession, message: Message) -> None:
    await bus.send_to_session(keys.session_out(session.session_id), message)


async def say(bus: Bus, session: GatewaySession, utterance: int, text: str) -> None:
    """The ASR reports an utterance and its final transcript."""
    sid = session.session_id
    started = SpeechStarted(session_id=sid, turn_id=0, seq=utterance, at_ms=0, utterance=utterance)
    await from_asr(bus, session, started)
    final = TranscriptFinal(
        session_id=sid, turn_id=0, seq=utterance, text=text, utterance=utterance, speech_ended_at=time.time()
    )
    await from_asr(bus, session, final)


def tokens_counted(kind: str) -> float:
    labels = {"engine": "openai", "model": "m", "kind": kind}
    return REGISTRY.get_sample_value("voxmesh_llm_tokens_total", labels) or 0.0


def replies_done(session: GatewaySession, socket: FakeSocket, count: int) -> Callable[[], bool]:
    """Whether `count` replies were played to their end and charged."""
    return lambda: len(socket.saw("audio.end")) == count and session.usage.replies == count


async def test_session_usage_sums_the_servers_usage_for_a_scripted_conversation(bus: Bus) -> None:
    questions = ["What is the capital of France?", "And of Spain?", "Thanks, which is bigger?"]
    counted_before = {kind: tokens_counted(kind) for kind in ("input", "output")}
    async with FakeOpenAIServer(api_key=KEY) as server:
        llm_settings = LlmSettings(
            consumer_name="t", redis_url=bus.url, openai_base_url=f"{server.base_url}/v1", openai_model="m",
            openai_api_key=SecretStr(KEY), first_phrase_yield_ms=0, tools=False,
        )  # fmt: skip
        llm = LlmService(llm_settings, bus)
        await llm.load()
        tts = TtsService(TtsSettings(consumer_name="t", redis_url=bus.url), bus, SilentVoice())
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(llm.run(stop))
            group.create_task(tts.run(stop))
            try:
                async with session_running(bus) as (session, socket):
                    socket.incoming.put_nowait({"type": "websocket.receive", "bytes": b"\0" * SECOND})
                    for number, question in enumerate(questions, 1):
                        await say(bus, session, number * 100, question)
                        await eventually(replies_done(session, socket, number), within=20)
                        await asyncio.sleep(0.2)  # the reply's 0.1 s phrases have played
                    client_says(socket, {"type": "session.usage"})
                    await eventually(lambda: bool(socket.saw("session.usage")))
                    client_says(socket, {"type": "session.close"})
                    await eventually(lambda: socket.close_code == 1000)
            finally:
                stop.set()
    asked, final = socket.saw("session.usage")
    sent = server.usage_sent
    assert len(sent) == 3
    expected = {
        "llm_input_tokens": sum(u["prompt_tokens"] for u in sent),
        "llm_output_tokens": sum(u["completion_tokens"] for u in sent),
        "tool_calls": 0, "replies": 3, "audio_in_seconds": 1.0,
    }  # fmt: skip
    assert {key: final[key] for key in expected} == expected
    assert {kind: tokens_counted(kind) - counted_before[kind] for kind in counted_before} == {
        "input": expected["llm_input_tokens"],
        "output": expected["llm_output_tokens"],
    }, "the Prometheus counters (by engine and model) got the same figures"
    assert asked["llm_output_tokens"] == final["llm_output_tokens"], "asked for after the last reply"
    phrases = len(socket.saw("reply.text"))
    assert final["audio_out_seconds"] == pytest.approx(phrases * 0.1, rel=0.05)
    per_turn = [(t["turn_id"], t["input_tokens"], t["output_tokens"], t["estimated"]) for t in final["turns"]]
    assert per_turn == [(n, u["prompt_tokens"], u["completion_tokens"], False) for n, u in enumerate(sent, 1)]
    # Per turn too: each reply's audio, and the microphone audio up to its charge; they add up to the totals.
    assert all(t["audio_out_seconds"] > 0 for t in final["turns"])
    assert sum(t["audio_out_seconds"] for t in final["turns"]) == pytest.approx(
        final["audio_out_seconds"], abs=0.01
    )
    assert 0 < sum(t["audio_in_seconds"] for t in final["turns"]) <= final["audio_in_seconds"] + 0.01
    stored_turn = json.loads((await bus.redis.hget(keys.usage_turns(session.session_id), "1")) or "{}")
    assert stored_turn["audio_out_seconds"] == final["turns"][0]["audio_out_seconds"]
    stored: Any = await bus.redis.hgetall(keys.usage(session.session_id))
    assert int(stored[b"llm_output_tokens"]) == expected["llm_output_tokens"]
    turns_kept: Any = await bus.redis.hlen(keys.usage_turns(session.session_id))
    ttl: Any = await bus.redis.ttl(keys.usage(session.session_id))
    assert turns_kept == 3 and 0 < ttl <= 120, "kept per turn, expiring with the session"


def usage_of(session: GatewaySession, work_id: int, tokens: int) -> ReplyUsage:
    return ReplyUsage(
        session_id=session.session_id, turn_id=work_id, seq=0, engine="openai", model="m",
        input_tokens=tokens, output_tokens=tokens, phrase_count=1,
    )  # fmt: skip


async def test_a_discarded_speculation_adds_nothing_to_the_usage(bus: Bus) -> None:
    async with session_running(bus) as (session, socket):
        sid = session.session_id
        await from_asr(bus, session, SpeechStarted(session_id=sid, turn_id=0, seq=1, at_ms=0, utterance=10))
        await from_asr(bus, session, TranscriptSpeculative(
            session_id=sid, turn_id=0, seq=2, text="What is the capital of", utterance=10,
            speech_ended_at=time.time(), pause_ms=1200,
        ))  # fmt: skip
        speculation = await next_request(bus, "g")
        await from_asr(bus, session, usage_of(session, speculation.turn_id, 1000))  # held back with it
        resumed = SpeechResumed(session_id=sid, turn_id=0, seq=3, utterance=10, pause_ms=1200)
        await from_asr(bus, session, resumed)
        await from_asr(bus, session, TranscriptFinal(
            session_id=sid, turn_id=0, seq=4, text="What is the capital of France?", utterance=10,
            speech_ended_at=time.time(),
        ))  # fmt: skip
        answer = await next_request(bus, "g")
        assert answer.turn_id > speculation.turn_id
        await from_asr(bus, session, usage_of(session, speculation.turn_id, 1000))  # a late, stale report
        await from_asr(bus, session, usage_of(session, answer.turn_id, 7))
        await eventually(lambda: session.usage.replies == 1)
        client_says(socket, {"type": "session.usage"})
        await eventually(lambda: bool(socket.saw("session.usage")))
    [event] = socket.saw("session.usage")
    assert (event["llm_input_tokens"], event["llm_output_tokens"], event["replies"]) == (7, 7, 1)
    assert [t["turn_id"] for t in event["turns"]] == [1]


async def test_the_budget_switches_the_session_to_economy(bus: Bus) -> None:
    async with session_running(bus, GatewaySettings(session_token_budget=100)) as (session, socket):
        await say(bus, session, 10, "Tell me a story.")
        first = await next_request(bus, "g")
        assert not first.economy
        await from_asr(bus, session, usage_of(session, first.turn_id, 60))  # 120 tokens: over the budget
        await eventually(lambda: bool(socket.saw("session.updated")))
        await asyncio.sleep(0.1)
        await say(bus, session, 20, "And another one.")
        second = await next_request(bus, "g")
        client_says(socket, {"type": "session.update", "session": {"economy": False}})
        await eventually(lambda: len(socket.saw("session.updated")) == 2)
    assert second.economy
    reached, refused_off = socket.saw("session.updated")
    assert reached["reason"] == "budget_reached" and reached["session"]["economy"] is True
    assert refused_off["session"]["economy"] is True, "a session at its budget stays in economy mode"


async def test_the_budget_can_refuse_further_replies(bus: Bus) -> None:
    settings = GatewaySettings(session_token_budget=100, budget_action="refuse")
    async with session_running(bus, settings) as (session, socket):
        await say(bus, session, 10, "Tell me a story.")
        first = await next_request(bus, "g")
        await from_asr(bus, session, usage_of(session, first.turn_id, 60))
        await eventually(lambda: session.usage.budget_reached)
        await say(bus, session, 20, "And another one.")
        await eventually(lambda: bool(socket.saw("error")))
        assert await bus.redis.xlen(keys.LLM_REQUESTS) == 1, "no request for the refused reply"
    [error] = socket.saw("error")
    assert error["code"] == "budget_exceeded" and error["turn_id"] == 2


async def test_economy_by_default_and_per_session(bus: Bus) -> None:
    async with session_running(bus, GatewaySettings(economy=True)) as (session, socket):
        await say(bus, session, 10, "Hello.")
        assert (await next_request(bus, "g")).economy
        client_says(socket, {"type": "session.update", "session": {"economy": False}})
        await eventually(lambda: bool(socket.saw("session.updated")))
        await asyncio.sleep(0.1)
        await say(bus, session, 20, "Hello again.")
        assert not (await next_request(bus, "g")).economy
    assert socket.saw("session.updated")[0]["session"]["economy"] is False
