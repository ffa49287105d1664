"""The session's outbound queue: sends never wait on the client, order is kept, a close goes out after what
was sent before it, and a client that stops reading is closed with 1013."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.websockets import WebSocketState

from services.gateway.outbound import ClientSocket

pytestmark = pytest.mark.unit


class Socket:
    """A client's socket: records frames; while `stuck` is clear every send waits (a client not reading)."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self.stuck = asyncio.Event()
        self.stuck.set()
        self.application_state = WebSocketState.CONNECTED

    async def receive(self) -> dict[str, Any]:
        raise NotImplementedError

    async def send_json(self, data: Any) -> None:
        await self._wait()
        self.frames.append(data)

    async def send_bytes(self, data: bytes) -> None:
        await self._wait()
        self.frames.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self.closed is not None:
            raise RuntimeError("closed twice")
        self.closed = (code, reason or "")
        self.stuck.set()

    async def _wait(self) -> None:
        await self.stuck.wait()
        if self.closed is not None:
            raise RuntimeError("send after close")


async def test_sends_go_out_in_order_and_a_close_after_them() -> None:
    socket = Socket()
    out = ClientSocket(socket, max_queued_bytes=1 << 20, stall_s=5)
    await out.send_json({"type": "session.started"})  # before run: straight to the socket
    assert socket.frames == [{"type": "session.started"}]
    writer = asyncio.create_task(out.start())
    await out.send_json({"type": "audio.start"})
    await out.send_bytes(b"\x00\x01")
    await out.close(1001, "bye")
    await out.send_json({"type": "too late"})
    await asyncio.wait_for(writer, timeout=1)
    assert socket.frames[1:] == [{"type": "audio.start"}, b"\x00\x01"]
    assert socket.closed == (1001, "bye")


async def test_a_client_that_lets_output_pile_up_is_closed_at_once() -> None:
    socket = Socket()
    socket.stuck.clear()
    out = ClientSocket(socket, max_queued_bytes=100_000, stall_s=60)
    writer = asyncio.create_task(out.start())
    for _ in range(5):
        await asyncio.wait_for(out.send_bytes(bytes(30_000)), timeout=0.5)  # never waits on the client
    assert out.gave_up and socket.closed == (1013, "client too slow")
    await asyncio.wait_for(writer, timeout=1)


async def test_a_client_that_takes_nothing_for_the_read_timeout_is_closed() -> None:
    socket = Socket()
    socket.stuck.clear()
    out = ClientSocket(socket, max_queued_bytes=1 << 20, stall_s=0.2)
    writer = asyncio.create_task(out.start())
    await out.send_json({"type": "pong"})
    await asyncio.wait_for(writer, timeout=2)
    assert out.gave_up and socket.closed == (1013, "client too slow")


async def test_flush_lets_queued_frames_out_then_stops_the_writer() -> None:
    socket = Socket()
    out = ClientSocket(socket, max_queued_bytes=1 << 20, stall_s=5)
    writer = asyncio.create_task(out.start())
    await out.send_json({"type": "error"})
    await out.flush(timeout_s=1)
    assert writer.done() and socket.frames == [{"type": "error"}] and socket.closed is None
