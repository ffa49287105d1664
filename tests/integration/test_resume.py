"""A client whose connection drops comes back with its resume key within the window and carries on: same
session, turns still rising, its conversation and options kept. Only that client can: a wrong, spent,
unknown or foreign key is refused with `resume_failed`. Once the window is over nothing of the session is
left: no key in Redis, no pending entry in any consumer group, its ASR session closed.

Real gateway, LLM (behind a fake Gemini) and TTS processes on a real Redis; the ASR is stood in for where
the test needs to say what the user said, and real where its session must be closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.gateway.settings import GatewaySettings
from shared import keys
from shared.auth import Tokens
from shared.bus import Bus
from shared.schema import SessionClosed, decode
from tests.eventually import eventually
from tests.fake_gemini import FakeGeminiServer
from tests.gateway_support import serving
from tests.live_session import LiveSession, live_session
from tests.mesh_support import FakeAsr, ServiceProcess, fake_asr, llm_and_tts, service_process
from tests.ports import free_port_run

pytestmark = pytest.mark.integration

REPLY = "Paris is the capital of France. It is known for the Eiffel Tower, and for its long avenues."
LONG_REPLY = " ".join([REPLY] * 4)
SECRET = "s" * 40


def _gateway_env(**extra: str) -> dict[str, str]:
    return {"VOXMESH_GATEWAY_METRICS_PORT": str(free_port_run()), **extra}


@asynccontextmanager
async def mesh(
    bus: Bus, redis_url: str, tmp_path: Path, gemini: FakeGeminiServer, **gateway_env: str
) -> AsyncIterator[tuple[FakeAsr, str]]:
    """LLM, TTS and gateway processes and a stand-in ASR; yields it and the gateway's realtime URL."""
    async with (
        llm_and_tts(redis_url, tmp_path, gemini),
        fake_asr(bus) as asr,
        service_process("gateway", redis_url, tmp_path, **_gateway_env(**gateway_env)) as gateway,
    ):
        yield asr, f"ws://127.0.0.1:{gateway.port}/v1/realtime"


async def _ask(session: LiveSession, asr: FakeAsr, text: str) -> dict[str, Any]:
    """The user says `text`; returns the turn's last event (`audio.end` or `error`)."""
    mark = len(session.events)
    await asr.say(session.session_id, text)
    final = await session.wait_for(lambda e: e["type"] == "transcript.final" and e["text"] == text, 30, mark)
    return await session.wait_for(
        lambda e: e.get("turn_id") == final["turn_id"] and e["type"] in ("audio.end", "error"), 60, mark
    )


def _asked(gemini: FakeGeminiServer, question: str) -> str:
    """Everything the model was sent with the request that asked `question` (system prompt, history)."""
    for request in reversed(gemini.requests):
        body = json.dumps(request.body)
        if question in body:
            return body
    raise AssertionError(f"{question!r} was never asked")


def _drop(session: LiveSession) -> None:
    """The connection is cut: no close frame, as when a network goes away."""
    session.ws.transport.abort()


async def _refused(url: str, subprotocols: list[str]) -> LiveSession:
    async with live_session(url, subprotocols, microphone=False) as session:
        await asyncio.wait_for(session.closed.wait(), timeout=15)
    assert [e["code"] for e in session.of("error")] == ["resume_failed"], session.events
    assert (session.close_code, session.close_reason) == (1008, "resume failed")
    assert not session.of("session.started")
    return session


async def test_a_client_that_drops_and_comes_back_resumes_its_session(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    with FakeGeminiServer(reply=REPLY, words_per_chunk=4) as gemini:
        async with mesh(bus, redis_url, tmp_path, gemini) as (asr, url):
            async with live_session(url, ["voxmesh"]) as first, live_session(url) as other:
                started = first.of("session.started")[0]
                session_id, key = started["session_id"], started["resume"]
                assert started["resume_window_s"] == 15 and started["resumed"] is False
                await first.send(
                    {"type": "session.update", "session": {"instructions": "Talk like a pirate."}}
                )
                await first.wait_type("session.updated", 5)
                for question in ("What is the capital of France?", "And of Germany?"):
                    assert (await _ask(first, asr, question))["type"] == "audio.end"
                usage_before = await bus.redis.hgetall(keys.usage(session_id))
                _drop(first)
                # What the user said as the connection went is heard while it is away, and answered after.
                await eventually(lambda: _parked(bus, session_id), 10)
                await asr.say(session_id, "And of Spain?")

                async with live_session(url, ["voxmesh", f"resume.{key}"]) as second:
                    again = second.of("session.started")[0]
                    assert again["session_id"] == session_id and again["resumed"] is True, again
                    assert again["turn_id"] == 2 and again["resume"] != key
                    spain = await second.wait_for(lambda e: e["type"] == "audio.end", 60)
                    assert spain["turn_id"] == 3, second.events
                    assert second.of("transcript.final")[0]["text"] == "And of Spain?"
                    last = await _ask(second, asr, "And of Italy?")
                    assert last["type"] == "audio.end" and last["turn_id"] == 4, last
                    await second.send({"type": "session.usage"})
                    usage = await second.wait_type("session.usage", 5)
                    # The other session never noticed.
                    assert (await _ask(other, asr, "Hello?"))["type"] == "audio.end"
                    assert not other.of("error")

                # The same key twice: spent once it was used.
                await _refused(url, ["voxmesh", f"resume.{key}"])

    context = _asked(gemini, "And of Italy?")
    assert "What is the capital of France?" in context and "And of Germany?" in context, "history kept"
    assert "Talk like a pirate." in context, "the session's instructions kept"
    assert "And of Spain?" in context
    assert usage["replies"] == 4 and usage["llm_input_tokens"] > int(usage_before[b"llm_input_tokens"])
    assert [turn["turn_id"] for turn in usage["turns"]] == [1, 2, 3, 4]


async def test_only_the_client_with_the_key_and_its_subject_can_resume(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    tokens = Tokens(SECRET.encode())
    alice, mallory = f"token.{tokens.mint('alice')}", f"token.{tokens.mint('mallory')}"
    auth = {"VOXMESH_GATEWAY_AUTH": "required", "VOXMESH_TOKEN_SECRET": SECRET}
    with FakeGeminiServer(reply=REPLY) as gemini:
        async with mesh(bus, redis_url, tmp_path, gemini, **auth) as (asr, url):
            async with live_session(url, ["voxmesh", alice]) as first, live_session(url, [alice]) as other:
                key = first.of("session.started")[0]["resume"]
                session_id, secret = key.split(".")
                _drop(first)

                await _refused(url, ["voxmesh", mallory, f"resume.{key}"])  # someone else's token
                await _refused(url, ["voxmesh", alice, f"resume.{session_id}.{'A' * len(secret)}"])
                await _refused(
                    url, ["voxmesh", alice, f"resume.{other.session_id}.{secret}"]
                )  # live, not its key
                await _refused(url, ["voxmesh", alice, f"resume.{'0' * 32}.{secret}"])  # no such session
                await _refused(url, ["voxmesh", alice, "resume.nonsense"])
                refused_in_query = url + f"?resume={'0' * 32}.{secret}"
                await _refused(refused_in_query, ["voxmesh", alice])

                # None of that spent the key; the other session goes on unbothered.
                async with live_session(url, ["voxmesh", alice, f"resume.{key}"]) as second:
                    assert second.of("session.started")[0]["session_id"] == session_id
                    assert (await _ask(second, asr, "What is the capital of France?"))["type"] == "audio.end"
                assert (await _ask(other, asr, "Hello?"))["type"] == "audio.end"
                assert not other.of("error")


async def test_a_client_back_before_the_server_noticed_the_drop_takes_its_session_over(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    """A half-open connection (the server has not seen it go) does not lock its client out."""
    with FakeGeminiServer(reply=REPLY) as gemini:
        async with mesh(bus, redis_url, tmp_path, gemini) as (asr, url):
            async with live_session(url, ["voxmesh"]) as first:
                key = first.of("session.started")[0]["resume"]
                async with live_session(url, ["voxmesh", f"resume.{key}"]) as second:
                    assert second.of("session.started")[0]["resumed"] is True
                    await asyncio.wait_for(first.closed.wait(), timeout=10)
                    assert first.close_code == 1000
                    assert (await _ask(second, asr, "What is the capital of France?"))["type"] == "audio.end"


async def _parked(bus: Bus, session_id: str) -> bool:
    return bool(await bus.redis.hexists(keys.session_record(session_id), "parked"))


async def _session_keys(bus: Bus, session_id: str) -> list[bytes]:
    return [key async for key in bus.redis.scan_iter(match=f"*{{{session_id}}}*")]


async def _pending(bus: Bus) -> dict[str, int]:
    counts: dict[str, int] = {}
    for stream, group in ((keys.ASR_DISPATCH, keys.ASR_GROUP), (keys.LLM_REQUESTS, keys.LLM_GROUP),
                          (keys.TTS_REQUESTS, keys.TTS_GROUP)):  # fmt: skip
        summary: Any = await bus.redis.xpending(stream, group)
        counts[group] = int(summary["pending"])
    return counts


async def _asr_sessions(asr: ServiceProcess) -> float:
    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(f"{asr.base_url}/metrics")).text
    [line] = [line for line in text.splitlines() if line.startswith("voxmesh_asr_sessions_owned ")]
    return float(line.split()[1])


async def test_after_the_window_nothing_of_the_session_is_left(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    """Dropped in the middle of a reply; the window (2 s here) runs out: its ASR session is closed, every key
    of it is deleted and no consumer group holds an entry of it; a late resume is refused."""
    await bus.redis.flushdb()
    with FakeGeminiServer(reply=LONG_REPLY, words_per_chunk=2, delay_s=0.1) as gemini:
        async with (
            llm_and_tts(redis_url, tmp_path, gemini),
            service_process("asr", redis_url, tmp_path) as real_asr,
            service_process(
                "gateway", redis_url, tmp_path, **_gateway_env(VOXMESH_GATEWAY_RESUME_WINDOW_S="2")
            ) as gateway,
        ):
            url = f"ws://127.0.0.1:{gateway.port}/v1/realtime"
            speaker = FakeAsr(bus)  # says what the user said; the real ASR owns the session
            async with live_session(url, ["voxmesh"]) as session:
                key = session.of("session.started")[0]["resume"]
                await eventually(lambda: _asr_took(real_asr), within=30)
                mark = len(session.events)
                await speaker.say(session.session_id, "Tell me about Paris.")
                await session.wait_type("audio.start", 60, mark)
                assert await _session_keys(bus, session.session_id)
                _drop(session)

            sid = session.session_id
            await eventually(lambda: _gone(bus, sid), within=30)
            assert await _asr_sessions(real_asr) == 0
            await _refused(url, ["voxmesh", f"resume.{key}"])
            await asyncio.sleep(1.0)  # anything still in flight for it would have landed by now
            assert await _session_keys(bus, sid) == []
            assert await _pending(bus) == {"asr": 0, "llm": 0, "tts": 0}


async def _asr_took(asr: ServiceProcess) -> bool:
    return await _asr_sessions(asr) == 1


async def _gone(bus: Bus, session_id: str) -> bool:
    return not await _session_keys(bus, session_id) and sum((await _pending(bus)).values()) == 0


async def test_sessions_kept_for_a_resume_count_against_the_address_limit(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    """Each kept session holds an ASR slot: a client dropping connections on purpose cannot pile them up."""
    env = _gateway_env(VOXMESH_GATEWAY_MAX_SESSIONS_PER_IP="2")
    async with fake_asr(bus), service_process("gateway", redis_url, tmp_path, **env) as gateway:
        url = f"ws://127.0.0.1:{gateway.port}/v1/realtime"
        resume_keys = []
        for _ in range(2):
            async with live_session(url, ["voxmesh"]) as session:
                resume_keys.append(session.of("session.started")[0]["resume"])
                _drop(session)
            await eventually(lambda: _parked(bus, session.session_id), 10)  # noqa: B023

        async with connect(url, proxy=None) as refused:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(refused.recv(), timeout=10)
        got = closed.value.rcvd
        assert got is not None and (got.code, got.reason) == (1013, "too many sessions from this address")
        async with live_session(url, ["voxmesh", f"resume.{resume_keys[0]}"]) as resumed:
            assert resumed.of("session.started")[0]["resumed"] is True


async def test_a_gateway_shutting_down_ends_the_sessions_it_kept(bus: Bus) -> None:
    """Nobody would end them after it exits: their ASR sessions are told to close, their keys expire."""
    settings = GatewaySettings(http_host="127.0.0.1", http_port=free_port_run(), auth="off")
    url = f"ws://127.0.0.1:{settings.http_port}/v1/realtime"
    async with fake_asr(bus):
        async with serving(settings, bus, drain_s=2.0) as gateway:
            async with live_session(url, ["voxmesh"]) as session:
                _drop(session)
            await eventually(lambda: _parked(bus, session.session_id), 10)
            assert gateway.resumes.parked() == 1
        # `serving` drained the gateway on the way out.
        audio: Any = await bus.redis.xrange(keys.audio_in(session.session_id))
        assert [type(decode(fields)) for _, fields in audio][-1] is SessionClosed
        for key in keys.session_keys(session.session_id):
            assert await bus.redis.ttl(key) in range(-2, 121), key  # gone, or going within 120 s
        assert not await bus.redis.hexists(keys.session_record(session.session_id), "parked")
