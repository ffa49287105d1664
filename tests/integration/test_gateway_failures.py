"""The gateway session on a real Redis when the client or a service fails: the ASR always hears the end
of a session, and a reply that fails or stalls ends with an `error` event, never with silence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect, WebSocketState

from services.gateway import session as gateway_session
from services.gateway.session import GatewaySession
from services.gateway.settings import GatewaySettings
from shared import keys
from shared.bus import Bus
from shared.schema import (
    AudioChunk,
    Message,
    ReplyPhrase,
    ReplyRequested,
    ServiceError,
    SessionClosed,
    SpeechStarted,
    TranscriptFinal,
    decode,
)
from tests.eventually import eventually
from tests.gateway_support import next_request

pytestmark = pytest.mark.integration


class FakeSocket:
    """The client side of a WebSocket: records what the gateway sends; `gone` fails every send."""

    def __init__(self, *, gone: bool = False) -> None:
        self.gone = gone
        self.events: list[dict[str, Any]] = []
        self.application_state = WebSocketState.CONNECTED
        self.close_code: int | None = None
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send_json(self, event: dict[str, Any]) -> None:
        if self.gone:
            raise WebSocketDisconnect(1006)
        self.events.append(event)

    async def send_bytes(self, data: bytes) -> None:
        pass

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code = code
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": code})

    def saw(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]


@asynccontextmanager
async def session_running(bus: Bus) -> AsyncIterator[tuple[GatewaySession, FakeSocket]]:
    socket = FakeSocket()
    session = GatewaySession(socket, bus, GatewaySettings(), 16_000)  # type: ignore[arg-type]
    task = asyncio.create_task(session.run())
    try:
        await eventually(lambda: bool(socket.saw("session.started")))
        yield session, socket
    finally:
        socket.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, timeout=10)


async def _from_asr(bus: Bus, session: GatewaySession, message: Message) -> None:
    await bus.send_to_session(keys.session_out(session.session_id), message)


async def _ask(bus: Bus, session: GatewaySession) -> ReplyRequested:
    """The user says a question (as the ASR reports it); returns the request the gateway queued."""
    sid = session.session_id
    await _from_asr(bus, session, SpeechStarted(session_id=sid, turn_id=0, seq=1, at_ms=0, utterance=1))
    final = TranscriptFinal(
        session_id=sid, turn_id=0, seq=2, text="Capital of France?", utterance=1, speech_ended_at=time.time()
    )
    await _from_asr(bus, session, final)
    return await next_request(bus, "test-llm")


async def test_a_client_gone_right_after_the_handshake_still_closes_its_asr_session(bus: Bus) -> None:
    socket = FakeSocket(gone=True)
    session = GatewaySession(socket, bus, GatewaySettings(), 16_000)  # type: ignore[arg-type]
    with pytest.raises(WebSocketDisconnect):
        await session.run()
    entries: Any = await bus.redis.xrange(keys.audio_in(session.session_id))
    assert [type(decode(fields)) for _, fields in entries] == [SessionClosed]


async def test_a_reply_a_service_gave_up_on_ends_with_an_error_and_audio_end(bus: Bus) -> None:
    async with session_running(bus) as (session, socket):
        request = await _ask(bus, session)
        ids = {"session_id": session.session_id, "turn_id": request.turn_id}
        await _from_asr(bus, session, ReplyPhrase(**ids, seq=0, text="Paris is.", output_sample_rate=16_000))
        chunk = AudioChunk(**ids, seq=0, phrase_seq=0, sample_rate=16_000, audio=b"\x01\x00" * 160)
        await _from_asr(bus, session, chunk)
        await eventually(lambda: bool(socket.saw("audio.start")))
        # TTS failed on phrase 1 for good: it never completes, so without an end the client waits forever.
        failed = ServiceError(**ids, seq=0, code="turn_failed", message="the reply could not be spoken")
        await _from_asr(bus, session, failed)
        await eventually(lambda: bool(socket.saw("audio.end")))
    [error] = socket.saw("error")
    assert error["code"] == "turn_failed" and error["turn_id"] == socket.saw("audio.start")[0]["turn_id"]


async def test_a_reply_whose_output_stops_coming_ends_with_an_error(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_session, "REPLY_STALL_S", 0.5, raising=False)
    async with session_running(bus) as (session, socket):
        await _ask(bus, session)  # and nothing answers: the LLM died and no replica took the request over
        await eventually(lambda: bool(socket.saw("error")), within=4)
    [error] = socket.saw("error")
    assert error["code"] == "turn_failed" and error["turn_id"] == 1


async def test_an_asr_that_gave_up_on_the_session_closes_it_with_an_error(bus: Bus) -> None:
    async with session_running(bus) as (session, socket):
        sid = session.session_id
        failed = ServiceError(
            session_id=sid, turn_id=0, seq=5, code="session_failed", message="recognition failed"
        )
        await _from_asr(bus, session, failed)
        await eventually(lambda: socket.close_code is not None)
    assert socket.close_code == 1011
    assert [e["code"] for e in socket.saw("error")] == ["session_failed"]
