"""The gateway's OpenAI Realtime path under uvicorn on a real Redis, driven by the unmodified `openai` SDK: a
session token as the SDK's API key (`Authorization: Bearer`), the native path left as it was, the native
limits, and what a turn asks of the LLM (a stand-in ASR says what the user said)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.gateway.settings import GatewaySettings
from shared.auth import Tokens, TokenSettings
from shared.bus import Bus
from tests.eventually import eventually
from tests.gateway_support import next_request, serving
from tests.mesh_support import fake_asr
from tests.openai_realtime_support import Client, strict_event
from tests.ports import free_port_run

pytestmark = pytest.mark.integration

SECRET = "openai-realtime-secret-" + "x" * 41
TOKENS = Tokens(SECRET.encode())
TOOL = {"type": "function", "name": "lookup", "description": "Look a thing up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("VOXMESH_"):
            monkeypatch.delenv(name)
    yield


def _settings(**values: Any) -> GatewaySettings:
    values.setdefault("auth", "required")
    values.setdefault("tokens", TokenSettings(secret=SecretStr(SECRET), secret_file=None))
    return GatewaySettings(http_host="127.0.0.1", http_port=free_port_run(), **values)


def _sdk(port: int, api_key: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=api_key, websocket_base_url=f"ws://127.0.0.1:{port}/v1")


async def test_the_sdks_api_key_is_the_session_token(bus: Bus) -> None:
    settings = _settings()
    async with serving(settings, bus), fake_asr(bus):
        async with _sdk(settings.http_port, TOKENS.mint()).realtime.connect(model="gpt-realtime") as conn:
            assert strict_event(await conn.recv_bytes()).type == "session.created"
        async with _sdk(settings.http_port, "not-a-token").realtime.connect(model="gpt-realtime") as conn:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(conn.recv_bytes(), timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token invalid")
        url = f"ws://127.0.0.1:{settings.http_port}/v1/realtime?model=gpt-realtime"
        async with connect(url, proxy=None) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token required")


async def test_without_a_model_parameter_the_native_protocol_answers(bus: Bus) -> None:
    settings = _settings(auth="off")
    async with serving(settings, bus), fake_asr(bus):
        async with connect(f"ws://127.0.0.1:{settings.http_port}/v1/realtime", proxy=None) as ws:
            first = await asyncio.wait_for(ws.recv(), timeout=5)
    assert '"type":"session.started"' in str(first).replace(" ", "")


async def test_a_spoken_turn_asks_the_llm_with_the_clients_instructions_and_tools(bus: Bus) -> None:
    settings = _settings(auth="off")
    async with serving(settings, bus), fake_asr(bus) as asr:
        async with _sdk(settings.http_port, "anything").realtime.connect(model="gpt-realtime") as conn:
            client = Client(conn)
            reader = asyncio.create_task(client.read())
            try:
                await client.wait_type("session.created", timeout_s=5)
                await conn.session.update(
                    session={"type": "realtime", "instructions": "Be brief.", "tools": [TOOL]}  # type: ignore[list-item]
                )
                await client.wait_type("session.updated", timeout_s=5)
                await eventually(lambda: bool(asr.sessions))  # the stand-in ASR took the session
                await asr.say(asr.sessions[-1], "Look up the moon.")
                request = await next_request(bus, "llm-test")
                assert request.text == "Look up the moon." and request.instructions == "Be brief."
                assert [tool.name for tool in request.tools] == ["lookup"]
                assert request.output_sample_rate == 24_000
                _, completed = await client.wait_type(
                    "conversation.item.input_audio_transcription.completed", timeout_s=5
                )
                assert completed.transcript == "Look up the moon."
                await client.wait_type("response.created", timeout_s=5)
            finally:
                reader.cancel()


async def test_audio_faster_than_real_time_is_limited_as_on_the_native_path(bus: Bus) -> None:
    settings = _settings(auth="off")
    chunk = base64.b64encode(b"\0" * (24_000 * 2 // 10)).decode()  # 100 ms at 24 kHz
    async with serving(settings, bus), fake_asr(bus):
        async with _sdk(settings.http_port, "anything").realtime.connect(model="gpt-realtime") as conn:
            client = Client(conn)
            reader = asyncio.create_task(client.read())
            try:
                for _ in range(40):  # 4 s of audio at once
                    await conn.input_audio_buffer.append(audio=chunk)
                _, error = await client.wait_type("error", timeout_s=5)
                assert error.error.code == "rate_limited"
                await conn.input_audio_buffer.clear()
                await client.wait_type("input_audio_buffer.cleared", timeout_s=5)  # the session goes on
            finally:
                reader.cancel()


async def test_response_cancel_stops_the_response_in_progress(bus: Bus) -> None:
    settings = _settings(auth="off")
    async with serving(settings, bus), fake_asr(bus):
        async with _sdk(settings.http_port, "anything").realtime.connect(model="gpt-realtime") as conn:
            client = Client(conn)
            reader = asyncio.create_task(client.read())
            try:
                await client.wait_type("session.created", timeout_s=5)
                await conn.conversation.item.create(
                    item={
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Hi."}],
                    }
                )
                await conn.response.create(response={"instructions": "Say hello."})
                request = await next_request(bus, "llm-test")
                assert request.text == "Hi." and request.instructions == "Say hello."
                _, created = await client.wait_type("response.created", timeout_s=5)
                await conn.send({"type": "response.create"})
                _, busy = await client.wait_type("error", timeout_s=5)
                assert busy.error.code == "conversation_already_has_active_response"
                await conn.response.cancel()
                _, done = await client.wait_type("response.done", timeout_s=5)
                assert done.response.id == created.response.id and done.response.status == "cancelled"
                assert done.response.status_details.reason == "client_cancelled"
            finally:
                reader.cancel()


async def test_a_client_of_the_beta_protocol_is_told_and_closed_before_anything_starts(bus: Bus) -> None:
    settings = _settings(auth="off")
    url = f"ws://127.0.0.1:{settings.http_port}/v1/realtime?model=gpt-4o-realtime-preview"
    async with serving(settings, bus):
        async with connect(url, proxy=None, additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
            error = strict_event(await asyncio.wait_for(ws.recv(), timeout=5))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout=5)
    assert error.type == "error" and error.error.code == "unsupported_protocol"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert await bus.redis.dbsize() == 0, "nothing was written for it"
