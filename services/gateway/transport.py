"""The WebSocket transport under the gateway: uvicorn's, except that a client that stops reading can hold
neither its session nor the server's shutdown.

uvicorn writes nothing, a close frame included, while the socket's write buffer is above its high-water
mark, and it closes a connection by letting that buffer drain first. A client that never reads would
never drain it: the session's close would wait forever, and so would the server's shutdown, which waits
for every connection. Here a close frame is written behind whatever the client has not read yet, and a
connection still open `close_timeout_s` after the server decided to close it is aborted.
"""

from __future__ import annotations

from asyncio import TimerHandle

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a bounded close (pass as uvicorn's `ws`)."""

    close_timeout_s = 5.0
    """How long a closing connection may take (the client's close reply, its unread data) before it is
    aborted."""

    _abort_timer: TimerHandle | None = None

    max_unread_messages = 32
    """Client messages queued for the app before the socket stops reading (32 frames: 0.64 s of audio)."""
    max_unread_bytes = 256 * 1024
    """The same bound in bytes (a large message pauses reading at once)."""
    _unread_bytes = 0

    def send_receive_event_to_app(self) -> None:
        """As uvicorn's, but reading pauses only once messages pile up.

        uvicorn pauses the socket after every message and resumes it on the app's next receive: two epoll
        calls per 20 ms frame and session (~9 % of the gateway's CPU at 40 sessions). Reading stays on until
        `max_unread_messages` or `max_unread_bytes` wait for the app, which bounds a flood as before."""
        self._unread_bytes += sum(len(frame) for frame in self.frames)
        paused, self.read_paused = self.read_paused, True  # uvicorn's own pause is skipped
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        unread = self.queue.qsize()
        if (
            unread >= self.max_unread_messages or self._unread_bytes >= self.max_unread_bytes
        ) and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> ASGIReceiveEvent:
        """As uvicorn's (reading resumes once the app has taken every queued message)."""
        message = await super().receive()
        if self.queue.empty():
            self._unread_bytes = 0
        elif message["type"] == "websocket.receive":
            data = message.get("bytes") or message.get("text") or b""
            self._unread_bytes = max(0, self._unread_bytes - len(data))
        return message

    async def send(self, message: ASGISendEvent) -> None:
        """As uvicorn's, but a close never waits for the client to read what was sent before it."""
        if message["type"] == "websocket.close" and self.handshake_complete and not self.writable.is_set():
            # A close frame is a few bytes: queue it behind the unread data rather than wait for room.
            self.writable.set()
        await super().send(message)
        if message["type"] == "websocket.close":
            self._abort_later()

    def keepalive_timeout(self) -> None:
        """The client stopped answering pings: uvicorn closes, and here the close is bounded."""
        super().keepalive_timeout()
        self._abort_later()

    def shutdown(self) -> None:
        """The server is stopping: uvicorn closes every connection, and here each close is bounded."""
        super().shutdown()
        self._abort_later()

    async def run_asgi(self) -> None:
        """The app is done with the connection; whatever uvicorn does to close it must end in time."""
        await super().run_asgi()
        if not self.disconnected:
            self._abort_later()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: nothing left to abort."""
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)

    def _abort_later(self) -> None:
        if self._abort_timer is None and not self.disconnected:
            self._abort_timer = self.loop.call_later(self.close_timeout_s, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if not self.disconnected:
            self.transport.abort()
