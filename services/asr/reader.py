"""An ASR replica's audio intake: one `XREAD BLOCK` over the audio streams of every session it owns.

A blocking read per session cost each session ~50 Redis round trips a second at 50 sessions (the ASR was the
busiest process, docs/reliability.md); one read for all of them returns whatever has arrived on any stream,
so under load each round trip carries many frames. A session joining wakes the blocked read through a wake
stream of the reader's own (XADD to it), so its first frame is not held back by the block time.

On a Redis Cluster a multi-key XREAD must stay within one slot, and every session's keys have a slot of
their own: there each session keeps a read of its own (`TailFeed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

from shared import keys
from shared.bus import Bus, Delivery, StreamTail, _decode_entries, is_cluster_url
from shared.metrics import MESSAGES_DROPPED
from shared.schema import AudioFrame

log = logging.getLogger(__name__)

# Clients stream microphone audio all the time, and the gateway closes a socket idle for 300 s: a session
# with no audio for longer has lost its gateway (a crash leaves no SessionClosed) and is given up.
SESSION_IDLE_TIMEOUT_S = 360.0
BLOCK_MS = 1000
"""How long a read waits for entries (a feed's read returns empty after it, for the idle timeout)."""
COUNT = 200
"""At most this many entries of one stream per read; a feed holding this many unread waits its turn (its
backlog stays in Redis, bounded as before)."""
_WAKE_EXPIRY_S = 3600


class Feed:
    """One session's audio stream, in order from a position, as read for it by the replica's reader."""

    def __init__(self, session_id: str, last_id: bytes | str, idle_timeout_s: float) -> None:
        self.session_id = session_id
        self.stream = keys.audio_in(session_id)
        self.last_id: bytes | str = last_id
        self._idle_timeout_s = idle_timeout_s
        self._heard_at = time.monotonic()
        self.next_frame: int | None = 0 if last_id in (b"0-0", "0-0") else None
        """The seq the next audio frame should have (None: not known yet, resuming from a checkpoint)."""
        self._buffer: list[Delivery] = []
        self._error: BaseException | None = None
        self._ready = asyncio.Event()
        self.reader: AudioReader | None = None

    @property
    def wanted(self) -> bool:
        """Whether the reader should read more for this feed now."""
        return self._error is None and len(self._buffer) < COUNT

    async def read(self) -> list[Delivery] | None:
        """The entries read since the last call (waiting up to BLOCK_MS for some); None once no audio has
        arrived for the idle timeout."""
        deliveries = await self._next()
        if deliveries:
            self._heard_at = time.monotonic()
        elif time.monotonic() - self._heard_at > self._idle_timeout_s:
            return None
        self._count_gaps([d.message for d in deliveries if isinstance(d.message, AudioFrame)])
        return deliveries

    async def _next(self) -> list[Delivery]:
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), BLOCK_MS / 1000)
            except TimeoutError:
                pass
        if self._error is not None:
            raise self._error
        deliveries, self._buffer = self._buffer, []
        self._ready.clear()
        if len(deliveries) >= COUNT and self.reader is not None:
            await self.reader.wake()  # it was left out of the read: it wants more now
        return deliveries

    def deliver(self, entries: list[Any]) -> None:
        """Reader: entries read for this feed, in order."""
        self.last_id = entries[-1][0]
        good, _ = _decode_entries(entries, "audio_in")
        self._buffer.extend(good)
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        """Reader: the read failed; the feed's reader raises it."""
        self._error = error
        self._ready.set()

    def _count_gaps(self, frames: list[AudioFrame]) -> None:
        """Frames missing between those read: trimmed from the stream before this owner read them (it fell
        more than SESSION_STREAM_MAXLEN frames behind)."""
        for frame in frames:
            if self.next_frame is not None and frame.seq > self.next_frame:
                MESSAGES_DROPPED.labels(reason="audio_gap").inc(frame.seq - self.next_frame)
                log.warning("audio frames lost", extra={"session_id": self.session_id})
            self.next_frame = frame.seq + 1

    async def close(self) -> None:
        """Leave the reader."""
        if self.reader is not None:
            self.reader.leave(self)


class TailFeed(Feed):
    """A feed with a blocking read of its own (Redis Cluster, or no shared reader)."""

    def __init__(self, bus: Bus, session_id: str, last_id: bytes | str, idle_timeout_s: float) -> None:
        super().__init__(session_id, last_id, idle_timeout_s)
        self._tail = StreamTail(bus, self.stream, label="audio_in", last_id=last_id, block_ms=BLOCK_MS)

    async def _next(self) -> list[Delivery]:
        return await self._tail.read(COUNT)

    async def close(self) -> None:
        await self._tail.close()


class AudioReader:
    """Reads the audio of all the sessions a replica owns with one blocking read at a time (`run`)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._feeds: dict[str, Feed] = {}
        self._wake_key = f"{keys.PREFIX}:asr:wake:{uuid.uuid4().hex}"
        self._wake_id: bytes | str = "0-0"
        self._shared = not is_cluster_url(bus.url)

    async def open(
        self, session_id: str, last_id: bytes | str, idle_timeout_s: float = SESSION_IDLE_TIMEOUT_S
    ) -> Feed:
        """A feed of the session's audio from `last_id`, served from the next read on."""
        if not self._shared or keys.audio_in(session_id) in self._feeds:
            return TailFeed(self._bus, session_id, last_id, idle_timeout_s)
        feed = Feed(session_id, last_id, idle_timeout_s)
        feed.reader = self
        self._feeds[feed.stream] = feed
        await self.wake()
        return feed

    @property
    def sessions(self) -> list[str]:
        """The sessions whose audio the shared read covers."""
        return [feed.session_id for feed in self._feeds.values()]

    def leave(self, feed: Feed) -> None:
        """The feed's session is over: its stream leaves the next read."""
        if self._feeds.get(feed.stream) is feed:
            del self._feeds[feed.stream]

    async def wake(self) -> None:
        """End the read in progress, so the next one includes what changed."""
        async with self._bus.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": b"1"}, maxlen=10, approximate=False)
            pipe.expire(self._wake_key, _WAKE_EXPIRY_S)
            await pipe.execute()

    async def run(self) -> None:
        """Read until cancelled, handing each stream's entries to its feed in order."""
        if not self._shared:
            await asyncio.Event().wait()  # each feed reads for itself
        client = self._bus.blocking_client()
        try:
            while True:
                await self._read_once(client)
        finally:
            await client.aclose()
            with contextlib.suppress(RedisError, OSError):  # it expires anyway
                await self._bus.redis.delete(self._wake_key)

    async def _read_once(self, client: Any) -> None:
        streams: dict[Any, Any] = {self._wake_key: self._wake_id}
        streams.update({s: f.last_id for s, f in self._feeds.items() if f.wanted})
        try:
            reply: Any = await client.xread(streams, count=COUNT, block=BLOCK_MS)
        except (RedisError, OSError) as exc:  # every session reading now fails, as its own read would
            await self._failed(exc)
            return
        for raw_stream, entries in reply or []:
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else str(raw_stream)
            if not entries:
                continue
            if stream == self._wake_key:
                self._wake_id = entries[-1][0]
            elif (feed := self._feeds.get(stream)) is not None:
                feed.deliver(entries)
            # else: the session left while the read was out; its entries are not wanted any more

    async def _failed(self, error: BaseException) -> None:
        log.warning("audio read failed", extra={"error": type(error).__name__})
        for feed in list(self._feeds.values()):
            feed.fail(error)
        self._feeds.clear()
        await asyncio.sleep(0.2)
