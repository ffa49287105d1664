"""Client → ASR: the session's microphone frames and in-band controls onto its audio stream, in order,
without the socket waiting on Redis.

Awaiting one XADD per 20 ms frame before reading the next frame let any Redis or CPU stall back the socket
up; the client's backlog then arrived all at once, faster than the input rate limit, and was refused
(docs/reliability.md). Frames now queue (bounded) and one writer task sends whatever has accumulated in one
pipelined round trip. A full queue is never dropped silently: `put` says so and the session closes.
"""

from __future__ import annotations

import asyncio
from collections import deque

from shared.bus import SESSION_STREAM_MAXLEN, SESSION_TTL_SECONDS, Bus, cancel_safe
from shared.schema import Message, encode

MAX_QUEUED = 500
"""Entries waiting for Redis at most (10 s of 20 ms frames): beyond it the session is closed as overloaded."""


class Inbound:
    """One session's writes to its audio stream: `put` queues, `run` writes in order, `flush` waits."""

    def __init__(self, bus: Bus, stream: str, *, limit: int = MAX_QUEUED) -> None:
        self._bus = bus
        self._stream = stream
        self._limit = limit
        self._queue: deque[Message] = deque()
        self._queued = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, message: Message) -> bool:
        """Queue a message for the stream; False (nothing queued) when the queue is full."""
        if len(self._queue) >= self._limit:
            return False
        self._queue.append(message)
        self._idle.clear()
        self._queued.set()
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far is written (the writer must be running)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Write until cancelled: each round trip carries everything queued meanwhile, in order."""
        while True:
            await self._queued.wait()
            self._queued.clear()
            batch = list(self._queue)
            self._queue.clear()
            async with self._bus.redis.pipeline(transaction=False) as pipe:
                for message in batch:
                    pipe.xadd(self._stream, encode(message), maxlen=SESSION_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
                pipe.expire(self._stream, SESSION_TTL_SECONDS)  # in the same round trip: next to free
                await cancel_safe(pipe.execute())
            if not self._queue:
                self._idle.set()
