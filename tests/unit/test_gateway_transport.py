"""The gateway's WebSocket protocol reads on while the session keeps up, and pauses once messages pile up
(uvicorn's own pauses and resumes the socket around every message)."""

from __future__ import annotations

import asyncio

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from services.gateway.transport import GatewayWebSocketProtocol

pytestmark = pytest.mark.unit


class _Transport:
    """Records flow control calls (the protocol's only use of its transport here)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


async def _app(scope: object, receive: object, send: object) -> None:
    return None


def _protocol() -> tuple[GatewayWebSocketProtocol, _Transport]:
    config = Config(app=_app, ws="websockets-sansio", lifespan="off")
    config.load()
    protocol = GatewayWebSocketProtocol(config, ServerState(), {})
    transport = _Transport()
    protocol.transport = transport  # type: ignore[assignment]
    return protocol, transport


def _arrive(protocol: GatewayWebSocketProtocol, data: bytes) -> None:
    protocol.curr_msg_data_type = "bytes"
    protocol.frames = [data]
    protocol.send_receive_event_to_app()


async def test_reading_goes_on_while_the_app_keeps_up() -> None:
    protocol, transport = _protocol()
    for _ in range(200):
        _arrive(protocol, b"\x00" * 640)
        message = await protocol.receive()
        assert message == {"type": "websocket.receive", "bytes": b"\x00" * 640}
    assert transport.calls == []


async def test_a_backlog_pauses_reading_until_the_app_has_taken_it() -> None:
    protocol, transport = _protocol()
    for _ in range(protocol.max_unread_messages - 1):
        _arrive(protocol, b"\x00" * 640)
    assert transport.calls == []
    _arrive(protocol, b"\x00" * 640)
    assert transport.calls == ["pause"]
    for _ in range(protocol.max_unread_messages - 1):
        await protocol.receive()
    assert transport.calls == ["pause"]
    await protocol.receive()
    assert transport.calls == ["pause", "resume"]


async def test_a_large_message_pauses_reading_at_once() -> None:
    protocol, transport = _protocol()
    _arrive(protocol, b"\x00" * protocol.max_unread_bytes)
    assert transport.calls == ["pause"]
    await asyncio.wait_for(protocol.receive(), 1)
    assert transport.calls == ["pause", "resume"]
    _arrive(protocol, b"\x00" * 640)
    assert transport.calls == ["pause", "resume"]
