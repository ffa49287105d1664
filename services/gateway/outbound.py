"""The session's side of the client's WebSocket: sending never waits on the client.

What the session sends goes into a bounded queue that one task writes to the socket, so a client that
reads slowly, or not at all, holds up neither its own session's work nor anybody else's. A client that
lets the queue fill up, or leaves a frame untaken for too long, is closed with 1013.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from starlette.types import Message
from starlette.websockets import WebSocketDisconnect, WebSocketState

from shared.metrics import GATEWAY_CLIENT_ERRORS

log = logging.getLogger(__name__)

SLOW_CLIENT_CLOSE = (1013, "client too slow")
FLUSH_S = 2.0
"""How long a session that is ending lets its writer send what is still queued (and its close)."""
_YIELDS_BEFORE_GIVING_UP = 3
# What a socket raises once it is closed or its client gone (uvicorn's ClientDisconnected is an OSError).
_GONE = (WebSocketDisconnect, RuntimeError, OSError)


class WebSocketLike(Protocol):
    """What the session needs of a WebSocket (starlette's, or a test's stand-in)."""

    @property
    def application_state(self) -> WebSocketState: ...

    async def receive(self) -> Message: ...

    async def send_json(self, data: Any) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


_Frame = dict[str, Any] | bytes | _Close


class ClientSocket:
    """A client's WebSocket whose sends are queued (at most `max_queued_bytes`) and written by one task.

    Until `start`, sends go straight to the socket; a close is queued behind what was sent before
    it, and nothing is sent after it. A frame the client does not take within `stall_s` means it stopped
    reading: like a full queue, that closes the socket with 1013 at once (queued frames are dropped).
    """

    def __init__(
        self, websocket: WebSocketLike, *, max_queued_bytes: int, stall_s: float, session_id: str = ""
    ) -> None:
        self.websocket = websocket
        self.session_id = session_id
        self.max_queued_bytes = max_queued_bytes
        self.stall_s = stall_s
        self.gave_up = False
        """The client was too slow and its socket was closed with 1013."""
        self.closed_by_server = False
        """The server closed (or is closing) the socket: the session ends on purpose, not by a drop."""
        self._queue: deque[tuple[_Frame, int]] = deque()
        self._queued_bytes = 0
        self._state: Literal["direct", "queued", "done"] = "direct"
        self._closing = False  # a close is queued or sent: nothing more goes out
        self._finishing = False
        self._wake = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def application_state(self) -> WebSocketState:
        """The underlying socket's state, as the app sees it."""
        return self.websocket.application_state

    async def receive(self) -> Message:
        """The client's next message."""
        return await self.websocket.receive()

    async def send_json(self, data: Any) -> None:
        """Send one JSON event."""
        if self._state == "direct":
            await self.websocket.send_json(data)
        else:
            await self._put(data, len(json.dumps(data, separators=(",", ":"), ensure_ascii=False)))

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary frame."""
        if self._state == "direct":
            await self.websocket.send_bytes(data)
        else:
            await self._put(data, len(data))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close after what was sent before; later sends are dropped."""
        self.closed_by_server = True
        if self._state == "queued" and not self._closing:
            self._closing = True
            self._append(_Close(code, reason or ""), 0)
        elif self._state != "queued":
            await self._close_now(code, reason or "")

    async def close_now(self, code: int, reason: str) -> None:
        """Close at once, dropping whatever is still queued."""
        self.closed_by_server = True
        self._closing = True
        self._queue.clear()
        self._queued_bytes = 0
        await self._close_now(code, reason)

    def start(self) -> Coroutine[Any, Any, None]:
        """From now on sends are queued; returns the writer for the caller to run as a task."""
        self._state = "queued"
        return self._run()

    async def _run(self) -> None:
        """Write queued frames until a close is written, the client goes, or `flush` is done waiting."""
        try:
            while (item := await self._next()) is not None:
                frame, _ = item
                if isinstance(frame, _Close):
                    await self._close_now(frame.code, frame.reason)
                    return
                if not await self._write(frame):
                    return
        finally:
            self._state = "done"
            self._queue.clear()
            self._done.set()

    async def flush(self, timeout_s: float = FLUSH_S) -> None:
        """Nothing more will be sent: give the writer up to `timeout_s` to send what is queued."""
        self._finishing = True
        self._wake.set()
        if self._state == "queued":
            try:
                async with asyncio.timeout(timeout_s):
                    await self._done.wait()
            except TimeoutError:
                pass  # the caller cancels the writer

    async def _next(self) -> tuple[_Frame, int] | None:
        while not self._queue:
            if self._finishing:
                return None
            self._wake.clear()
            await self._wake.wait()
        frame, size = self._queue.popleft()
        self._queued_bytes -= size
        return frame, size

    async def _write(self, frame: _Frame) -> bool:
        """Send one frame; False when the socket is done for (gone, closed, or given up on)."""
        try:
            async with asyncio.timeout(self.stall_s):
                if isinstance(frame, bytes):
                    await self.websocket.send_bytes(frame)
                else:
                    await self.websocket.send_json(frame)
        except TimeoutError:
            await self._give_up(f"no frame taken for {self.stall_s:g} s")
            return False
        except _GONE:
            self._closing = True  # the client is gone (or the socket was closed under us)
            return False
        return True

    def _sending(self) -> bool:
        return not self._closing and self._state != "done"

    async def _put(self, frame: _Frame, size: int) -> None:
        if not self._sending():
            return
        yields = 0
        while self._queued_bytes and self._queued_bytes + size > self.max_queued_bytes:
            if yields == _YIELDS_BEFORE_GIVING_UP:
                await self._give_up(f"more than {self.max_queued_bytes} bytes waiting to be sent")
                return
            # A burst read off the bus in one go may outrun a writer that has not had its turn yet.
            await asyncio.sleep(0)
            yields += 1
            if not self._sending():
                return
        self._append(frame, size)

    def _append(self, frame: _Frame, size: int) -> None:
        self._queue.append((frame, size))
        self._queued_bytes += size
        self._wake.set()

    async def _give_up(self, why: str) -> None:
        if self.gave_up:
            return
        self.gave_up = True
        GATEWAY_CLIENT_ERRORS.labels(reason="slow_client").inc()
        log.info("client not reading, closing", extra={"session_id": self.session_id, "reason": why})
        await self.close_now(*SLOW_CLIENT_CLOSE)

    async def _close_now(self, code: int, reason: str) -> None:
        try:
            await self.websocket.close(code=code, reason=reason)
        except _GONE:
            pass  # already closed, or the client already left
