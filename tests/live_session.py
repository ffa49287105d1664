"""A client session on the real gateway for tests: an open microphone (20 ms of silence every 20 ms, paced on
a monotonic clock) and a recorder of everything the gateway sends, until the connection closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME = b"\0" * 640  # 20 ms of 16 kHz s16le silence


@dataclass
class LiveSession:
    """What one connection received: JSON events in order, reply audio bytes, and how it was closed."""

    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def session_id(self) -> str:
        """The id from `session.started`."""
        return str(self.of("session.started")[0]["session_id"])

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one type received so far."""
        return [event for event in self.events if event["type"] == kind]

    async def wait_for(
        self, accept: Callable[[dict[str, Any]], bool], within: float, after: int = 0
    ) -> dict[str, Any]:
        """The first event from index `after` on that `accept` takes (TimeoutError after `within` s)."""
        async with asyncio.timeout(within):
            while True:
                for event in self.events[after:]:
                    if accept(event):
                        return event
                if self.closed.is_set():
                    raise ConnectionError(f"closed ({self.close_code} {self.close_reason}) before that came")
                self._changed.clear()
                await self._changed.wait()

    async def wait_type(self, kind: str, within: float, after: int = 0) -> dict[str, Any]:
        """The first event of type `kind` from index `after` on."""
        return await self.wait_for(lambda event: event["type"] == kind, within, after)

    async def send(self, event: dict[str, Any]) -> None:
        """Send one JSON event."""
        await self.ws.send(json.dumps(event))

    async def _record(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    self.audio_bytes += len(frame)
                else:
                    self.events.append(json.loads(frame))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""
            self.closed.set()
            self._changed.set()

    async def _microphone(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.ws.send(FRAME)
                sent += 1
                await asyncio.sleep(max(0.0, start + sent * 0.02 - loop.time()))


@asynccontextmanager
async def live_session(
    url: str, subprotocols: Sequence[str] = (), *, microphone: bool = True
) -> AsyncIterator[LiveSession]:
    """A connection to `url` whose `session.started` (or refusal) has come, recording until the block ends."""
    offered = [p for p in subprotocols] or None
    async with connect(url, proxy=None, subprotocols=offered, open_timeout=10) as ws:  # type: ignore[arg-type]
        session = LiveSession(ws)
        async with asyncio.TaskGroup() as group:
            recorder = group.create_task(session._record())
            microphone_task = group.create_task(session._microphone()) if microphone else None
            try:
                await session.wait_for(lambda event: event["type"] in ("session.started", "error"), 15)
                yield session
            finally:
                if microphone_task is not None:
                    microphone_task.cancel()
                await ws.close()
                await asyncio.wait_for(recorder, timeout=10)
