"""Redis Streams transport: sending, consumer-group work queues and ordered per-session tails."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import keys
from shared.metrics import BUS_DELIVERY_SECONDS, ENTRIES_TAKEN_OVER, MESSAGES_DROPPED
from shared.schema import DecodeError, Message, decode, encode

log = logging.getLogger(__name__)

T = TypeVar("T")

# Stream bounds: generous for work queues, about a minute of 20 ms frames for per-session audio.
WORK_QUEUE_MAXLEN = 10_000
SESSION_STREAM_MAXLEN = 5_000
SESSION_TTL_SECONDS = 3_600
SESSION_TTL_REFRESH_S = 60.0
"""A sender renews a per-session stream's expiry at most this often: not on each of its 50 frames a second."""
# Reply requests and phrases hold transcripts and replies: trimmed once this old, handled or not (an answer
# that late is of no use in realtime, and the text should not linger).
WORK_QUEUE_RETENTION_S = 300.0
DEAD_LETTER_MAXLEN = 1_000
DEAD_LETTER_RETENTION_S = 24 * 3_600
DEFAULT_CLAIM_IDLE_MS = 3_000
"""An entry idle this long is taken to be its dead consumer's and is taken over. Leases are renewed every
third of it, so a live replica's work is never this idle unless its event loop stalls for two thirds
of it; a dead replica's work is taken over 2-5 s after the crash (docs/reliability.md, measured)."""


def _retry() -> Retry:
    """Every command rides out a Redis restart of up to ~5 s (0.1 + 0.2 + 0.4 + 0.5 s each after that):
    redis-py reconnects and sends it again. Past that the caller sees the error."""
    return Retry(
        ExponentialBackoff(cap=0.5, base=0.05),
        retries=12,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that select the Redis Cluster client, and the plain scheme each stands for."""


def is_cluster_url(url: str) -> bool:
    """Whether `url` names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def connect(url: str, *, blocking: bool = False) -> Redis:
    """A client for `url`: redis-py's cluster client for a `redis+cluster://` URL (any node of the cluster
    as the address; the others are discovered), the plain client otherwise.

    `blocking`: a client for blocking reads alone, with no socket timeout (a plain client also keeps a
    single connection; a cluster client has its own connection per node and is never shared either).

    The cluster client is typed as the plain one: it answers the same commands, routed by key slot, and
    every key a pipeline or script touches is either one work queue or one session's hash-tagged keys
    (shared/keys.py). Pub/sub on it is the plain kind: PUBLISH reaches subscribers on every node.
    """
    scheme, sep, rest = url.partition("://")
    if scheme.lower() in CLUSTER_SCHEMES:
        plain = f"{CLUSTER_SCHEMES[scheme.lower()]}{sep}{rest}"
        options: dict[str, Any] = {"socket_timeout": None} if blocking else {}
        return cast(Redis, RedisCluster.from_url(plain, retry=_retry(), **options))
    if blocking:
        return Redis.from_url(url, socket_timeout=None, single_connection_client=True, retry=_retry())
    return Redis.from_url(url, retry=_retry())


async def load_slots(client: Redis) -> None:
    """Have a cluster client fetch the slot map now (its pub/sub picks a node by the channel's slot and
    needs the map before its first command); a plain client needs nothing."""
    cluster: object = client
    if isinstance(cluster, RedisCluster):
        await cluster.initialize()


def _min_id(age_s: float) -> str:
    """A stream id below every entry added in the last `age_s` seconds."""
    return f"{int((time.time() - age_s) * 1000)}-0"


# Renews the lease on each entry still pending to this consumer, atomically, and returns the ids another
# consumer holds now. XCLAIM with min-idle 0 alone would take back an entry another replica took over.
_RENEW_LEASES = """
local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #pending > 0 then
    if pending[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      table.insert(lost, ARGV[i])
    end
  end
end
return lost
"""


async def cancel_safe(command: Awaitable[T]) -> T:
    """Await a command on a pooled client without losing a cancel that lands during it.

    redis-py writes under `asyncio.wait_for` when the client has a socket timeout, and Python 3.11's
    wait_for returns the result, swallowing the cancel, when the cancel arrives just as the write
    finishes (python/cpython#86296, fixed in 3.12). A worker cancelled that way would go on speaking
    a stale reply. A cancel requested during the command is raised here instead.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await command
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded entry handed to this reader."""

    entry_id: bytes
    message: Message


class Bus:
    """A connection pool for short commands plus a factory for dedicated blocking readers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis: Redis = connect(url)
        self._expiry_renewed: dict[str, float] = {}  # per-session stream → when this bus last renewed it

    def blocking_client(self) -> Redis:
        """A client of its own for blocking reads: no socket timeout, never shared, safe to abandon."""
        return connect(self.url, blocking=True)

    async def ping(self) -> bool:
        """Whether Redis answers."""
        return bool(await self.redis.ping())

    async def send(self, stream: str, message: Message, *, maxlen: int = WORK_QUEUE_MAXLEN) -> bytes:
        """Append a message to a stream, trimming it approximately to `maxlen`."""
        entry_id: Any = await cancel_safe(
            self.redis.xadd(stream, encode(message), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        )
        return bytes(entry_id)

    async def send_to_session(
        self, stream: str, message: Message, *, state: dict[str, bytes | str] | None = None
    ) -> bytes:
        """Append to a per-session stream and keep it expiring, so abandoned sessions clean themselves up.

        `state`: keys of the same session to set in the same write (the sender's progress, such as an ASR
        checkpoint), so a sender killed now has done both or neither. The stream's expiry is renewed
        at most every SESSION_TTL_REFRESH_S by this bus (it expires an hour after its last write, give or
        take that)."""
        renew = self._renew_expiry(stream)
        if not renew and not state:
            entry_id: Any = await cancel_safe(
                self.redis.xadd(stream, encode(message), maxlen=SESSION_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            )
            return bytes(entry_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, encode(message), maxlen=SESSION_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            if renew:
                pipe.expire(stream, SESSION_TTL_SECONDS)
            for key, value in (state or {}).items():
                pipe.set(key, value, ex=SESSION_TTL_SECONDS)
            entry_id, *_ = await cancel_safe(pipe.execute())
        return bytes(entry_id)

    def _renew_expiry(self, stream: str) -> bool:
        """Whether the stream's expiry is due for renewal (and note that it is being renewed now)."""
        now = time.monotonic()
        if now - self._expiry_renewed.get(stream, -SESSION_TTL_REFRESH_S) < SESSION_TTL_REFRESH_S:
            return False
        if len(self._expiry_renewed) > 10_000:  # forget streams not written to for a while
            self._expiry_renewed = {
                k: t for k, t in self._expiry_renewed.items() if now - t < SESSION_TTL_REFRESH_S
            }
        self._expiry_renewed[stream] = now
        return True

    async def close(self) -> None:
        """Release the pool."""
        await self.redis.aclose()


def _observe_delivery(stream_label: str, message: Message) -> None:
    BUS_DELIVERY_SECONDS.labels(stream=stream_label).observe(max(0.0, time.time() - message.sent_at))


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that cannot be handled, with what is left of it for the dead-letter stream."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    reason: str


def _decode_entries(entries: list[Any], stream_label: str) -> tuple[list[Delivery], list[Rejected]]:
    """Split raw entries into decoded deliveries and entries that were deleted or malformed."""
    good: list[Delivery] = []
    bad: list[Rejected] = []
    for entry_id, fields in entries:
        if entry_id is None:
            continue
        if fields is None:  # trimmed away while pending (Redis 6.2 reports it this way)
            bad.append(Rejected(entry_id, {}, "deleted"))
            continue
        try:
            message = decode(fields)
        except DecodeError as exc:
            log.warning("dropping malformed entry", extra={"stream": stream_label, "error": str(exc)})
            MESSAGES_DROPPED.labels(reason="malformed").inc()
            bad.append(Rejected(entry_id, fields, "malformed"))
            continue
        _observe_delivery(stream_label, message)
        good.append(Delivery(entry_id, message))
    return good, bad


class WorkQueue:
    """A consumer-group reader: each entry goes to one replica, is acked after handling, and is
    taken over by another replica when its consumer dies (XAUTOCLAIM), up to `max_deliveries`."""

    def __init__(
        self,
        bus: Bus,
        stream: str,
        group: str,
        consumer: str,
        *,
        label: str,
        block_ms: int = 1000,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        max_deliveries: int = 5,
        retention_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.label = label
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.retention_s = retention_s
        """Entries older than this are trimmed away, handled or not (None: only the length is bounded)."""
        self._reader = bus.blocking_client()
        self._claim_cursor: bytes | str = "0-0"
        self._renew = bus.redis.register_script(_RENEW_LEASES)

    async def ensure_group(self) -> None:
        """Create the group (and stream) if missing; entries already waiting are kept for it."""
        try:
            await cancel_safe(self.bus.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int = 1) -> list[Delivery]:
        """Block up to `block_ms` for new entries for this consumer."""
        reply: Any = await self._reader.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=self.block_ms
        )
        if not reply:
            return []
        _, entries = reply[0]
        good, bad = _decode_entries(entries, self.label)
        await self._dead_letter(bad)
        return good

    async def ack(self, entry_id: bytes) -> None:
        """Mark an entry handled."""
        await cancel_safe(self.bus.redis.xack(self.stream, self.group, entry_id))

    async def keep_alive(self, entry_ids: list[bytes]) -> list[bytes]:
        """Reset the idle time of entries still being worked on, so nobody claims them (a lease);
        returns those another consumer has taken over meanwhile, which stay theirs."""
        if not entry_ids:
            return []
        lost: Any = await cancel_safe(
            self._renew(keys=[self.stream], args=[self.group, self.consumer, *entry_ids])
        )
        return [bytes(entry_id) for entry_id in lost]

    async def trim(self) -> None:
        """Drop entries older than `retention_s` (a queued request that old is no use to anyone)."""
        if self.retention_s is not None:
            await cancel_safe(
                self.bus.redis.xtrim(self.stream, minid=_min_id(self.retention_s), approximate=True)
            )

    async def claim_stale(self, count: int = 10) -> list[Delivery]:
        """Take over entries idle longer than `claim_idle_ms` (their consumer is presumed dead)."""
        reply: Any = await cancel_safe(
            self.bus.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, self._claim_cursor, count=count
            )
        )
        # Redis 6.2 answers [cursor, entries]; 7.x adds a third element with ids deleted meanwhile.
        self._claim_cursor = reply[0]
        entries = reply[1]
        if not entries:
            return []
        good, bad = _decode_entries(entries, self.label)
        fresh: list[Delivery] = []
        for delivery in good:
            if await self._delivery_count(delivery.entry_id) > self.max_deliveries:
                log.error("dead-lettering poison entry", extra={"stream": self.stream})
                MESSAGES_DROPPED.labels(reason="poison").inc()
                bad.append(Rejected(delivery.entry_id, encode(delivery.message), "consumers_died"))
            else:
                fresh.append(delivery)
        await self._dead_letter(bad)
        if fresh:
            ENTRIES_TAKEN_OVER.labels(queue=self.label).inc(len(fresh))
            log.info("claimed stale entries", extra={"stream": self.stream, "count": len(fresh)})
        return fresh

    async def _delivery_count(self, entry_id: bytes) -> int:
        pending = await cancel_safe(
            self.bus.redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        )
        return int(pending[0]["times_delivered"]) if pending else 0

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Set an entry aside with its payload, for a person to look at or replay, and ack it."""
        await self._dead_letter([Rejected(delivery.entry_id, encode(delivery.message), reason)])

    async def _dead_letter(self, rejected: list[Rejected]) -> None:
        for entry in rejected:
            # The entry's own fields (JSON envelope, audio) next to where it came from: replaying it is
            # XADD of those fields to `stream`. Bounded in length and age: it holds transcripts and replies.
            fields = {
                **entry.fields,
                b"stream": self.stream.encode(),
                b"entry_id": entry.entry_id,
                b"reason": entry.reason.encode(),
            }
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(keys.DEAD_LETTERS, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]
                pipe.xtrim(keys.DEAD_LETTERS, minid=_min_id(DEAD_LETTER_RETENTION_S), approximate=True)
                await cancel_safe(pipe.execute())
            await self.ack(entry.entry_id)

    async def close(self) -> None:
        """Drop the dedicated reader connection."""
        await self._reader.aclose()


class StreamTail:
    """Reads one stream in order with plain XREAD from a known position (no group: one owner)."""

    def __init__(
        self, bus: Bus, stream: str, *, label: str, last_id: bytes | str = "0-0", block_ms: int = 1000
    ):
        self.stream = stream
        self.label = label
        self.last_id: bytes | str = last_id
        self.block_ms = block_ms
        self._reader = bus.blocking_client()

    async def read(self, count: int = 200) -> list[Delivery]:
        """Block up to `block_ms` for entries after the last one returned."""
        reply: Any = await self._reader.xread({self.stream: self.last_id}, count=count, block=self.block_ms)
        if not reply:
            return []
        _, entries = reply[0]
        self.last_id = entries[-1][0]
        good, _ = _decode_entries(entries, self.label)
        return good

    async def close(self) -> None:
        """Drop the dedicated reader connection."""
        await self._reader.aclose()
