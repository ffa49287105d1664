"""Client → ASR: the sessions' microphone frames and in-band controls onto their audio streams, in order,
without the socket waiting on Redis.

Awaiting one XADD per 20 ms frame before reading the next frame let any Redis or CPU stall back the socket
up; the client's backlog then arrived all at once, faster than the input rate limit, and was refused
(docs/reliability.md). Frames now queue (bounded per session) and a writer sends whatever has accumulated
in one pipelined round trip. The gateway shares one writer among all its sessions, so at 20 ms a frame
per session a round trip carries many sessions' frames instead of one. A full queue is never dropped
silently: `put` says so and the session closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque

from redis.exceptions import RedisError

from shared.bus import SESSION_STREAM_MAXLEN, SESSION_TTL_SECONDS, Bus, cancel_safe
from shared.schema import Message, encode

log = logging.getLogger(__name__)

MAX_QUEUED = 500
"""Entries waiting for Redis at most (10 s of 20 ms frames): beyond it the session is closed as overloaded."""
EXPIRY_RENEW_S = 5.0
"""A stream's expiry is renewed with a write at most this often (and with its first write)."""


class InboundWriter:
    """Writes the queued entries of many sessions' audio streams, each round trip all that is queued, every
    stream's entries in the order they were put."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._queue: deque[tuple[Inbound, Message]] = deque()
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the writer (once, on the serving loop; again if it ended): owned here, ended by `close`."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop writing; entries still queued are not written (their sessions are closing)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def put(self, inbound: Inbound, message: Message) -> None:
        """Queue one entry for `inbound`'s stream."""
        self._queue.append((inbound, message))
        self._queued.set()

    async def run(self) -> None:
        """Write until cancelled. A failed round trip fails the sessions whose entries it carried."""
        while True:
            await self._queued.wait()
            self._queued.clear()
            batch = list(self._queue)
            self._queue.clear()
            if not batch:
                continue
            counts = Counter(inbound for inbound, _ in batch)
            try:
                await self._write(batch, counts)
            except Exception as exc:  # Redis down, or a bug: those sessions end; the others go on
                if not isinstance(exc, RedisError | OSError):
                    log.exception("writing client audio failed")
                for inbound in counts:
                    inbound.fail(exc)
                continue
            for inbound, count in counts.items():
                inbound.written(count)

    async def _write(self, batch: list[tuple[Inbound, Message]], streams: Counter[Inbound]) -> None:
        now = time.monotonic()
        async with self._bus.redis.pipeline(transaction=False) as pipe:
            for inbound, message in batch:
                pipe.xadd(inbound.stream, encode(message), maxlen=SESSION_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            for inbound in streams:
                if inbound.expiry_due(now):  # in the same round trip: a stream written has an expiry
                    pipe.expire(inbound.stream, SESSION_TTL_SECONDS)
            await cancel_safe(pipe.execute())


class Inbound:
    """One session's writes to its audio stream: `put` queues, `run` keeps them going (and raises when they
    fail), `flush` waits for everything queued. With no shared writer the session has its own."""

    def __init__(
        self, bus: Bus, stream: str, *, limit: int = MAX_QUEUED, writer: InboundWriter | None = None
    ) -> None:
        self.stream = stream
        self._limit = limit
        self._shared = writer is not None
        self._writer = writer if writer is not None else InboundWriter(bus)
        self._queued = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._failed: asyncio.Future[BaseException] | None = None
        self._error: BaseException | None = None
        self._expires_at = float("-inf")

    def put(self, message: Message) -> bool:
        """Queue a message for the stream; False (nothing queued) when the queue is full."""
        if self._queued >= self._limit:
            return False
        self._queued += 1
        self._idle.clear()
        self._writer.put(self, message)
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far is written (`run` must be running)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Keep the writes going until cancelled; raises the error of a write that failed."""
        self._failed = asyncio.get_running_loop().create_future()
        if self._error is not None:
            raise self._error
        own = None
        if self._shared:
            self._writer.start()
        else:
            own = asyncio.create_task(self._writer.run())
        try:
            raise await self._failed
        finally:
            if own is not None:
                own.cancel()
                await asyncio.gather(own, return_exceptions=True)

    def written(self, count: int) -> None:
        """The writer wrote `count` of this session's entries."""
        self._queued -= count
        if self._queued <= 0:
            self._queued = 0
            self._idle.set()

    def fail(self, error: BaseException) -> None:
        """The writer could not write this session's entries: `run` raises `error`."""
        self._error = error
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(error)
        self.written(self._queued)

    def expiry_due(self, now: float) -> bool:
        """Whether this write should renew the stream's expiry (and, if so, note that it does)."""
        if now - self._expires_at < EXPIRY_RENEW_S:
            return False
        self._expires_at = now
        return True
