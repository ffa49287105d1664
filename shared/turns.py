"""Turns and cancellation: the gateway raises a session's turn; everyone drops work from older turns."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys
from shared.bus import SESSION_TTL_SECONDS, Bus, cancel_safe, load_slots
from shared.schema import Cancel, DecodeError, decode_broadcast, encode_broadcast

log = logging.getLogger(__name__)


# INCR, but never to a number at or below one already handed out: a restarted Redis has lost the counter,
# and a turn number used twice would let a stale turn's output through and its cancel miss.
_RAISE_TURN = """
local turn = redis.call('INCR', KEYS[1])
local above = tonumber(ARGV[1])
if turn <= above then
  turn = above + 1
  redis.call('SET', KEYS[1], turn)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return turn
"""


async def open_turn(redis: Redis, session_id: str, *, above: int = 0) -> int:
    """Raise the session's turn past `above` (the gateway's newest; gateway only) and broadcast that
    everything older is cancelled."""
    raised = redis.eval(_RAISE_TURN, 1, keys.turn_counter(session_id), above, SESSION_TTL_SECONDS)
    turn = int(await cancel_safe(raised))
    await redis.publish(
        keys.CANCEL_CHANNEL, encode_broadcast(Cancel(session_id=session_id, turn_id=turn, seq=turn))
    )
    return turn


class TurnFence:
    """The newest turn this process knows of per session; work from an older turn is stale.

    Fed by cancel broadcasts (fast path) and by reading the counter (durable path), so a missed
    broadcast only delays a drop, never lets stale work through once the counter is read.
    """

    def __init__(self, redis: Redis, *, capacity: int = 50_000) -> None:
        self._redis = redis
        self._latest: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def observe(self, session_id: str, turn_id: int) -> None:
        """Record that `turn_id` exists for the session."""
        if turn_id > self._latest.get(session_id, -1):
            self._latest[session_id] = turn_id
        self._latest.move_to_end(session_id)
        while len(self._latest) > self._capacity:
            self._latest.popitem(last=False)

    def latest(self, session_id: str) -> int:
        """Newest turn seen locally (-1 when none)."""
        return self._latest.get(session_id, -1)

    def is_stale(self, session_id: str, turn_id: int) -> bool:
        """Local check, no I/O: a newer turn is already known."""
        return turn_id < self.latest(session_id)

    async def check_stale(self, session_id: str, turn_id: int) -> bool:
        """Durable check: reads the session's counter before deciding."""
        raw = await cancel_safe(self._redis.get(keys.turn_counter(session_id)))
        if raw is not None:
            self.observe(session_id, int(raw))
        return self.is_stale(session_id, turn_id)


CancelHandler = Callable[[Cancel], None]


async def listen_channel(
    bus: Bus, channel: str, handle: Callable[[bytes], None], subscribed: asyncio.Event | None = None
) -> None:
    """Hand every payload published on `channel` to `handle` until cancelled, reconnecting with backoff
    when Redis goes away; `subscribed` is set while the subscription stands."""
    backoff = 0.1
    while True:
        client = bus.blocking_client()
        try:
            await load_slots(client)
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                if subscribed is not None:
                    subscribed.set()
                backoff = 0.1
                async for raw in pubsub.listen():
                    if raw.get("type") == "message":
                        handle(raw["data"])
        except (RedisError, OSError) as exc:
            if subscribed is not None:
                subscribed.clear()
            log.warning("channel lost, reconnecting", extra={"channel": channel, "error": str(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        finally:
            await client.aclose()


class CancelListener:
    """Hears every cancel broadcast (pub/sub: every replica gets each one) and reconnects on failure."""

    def __init__(self, bus: Bus, fence: TurnFence, on_cancel: CancelHandler | None = None) -> None:
        self._bus = bus
        self._fence = fence
        self._on_cancel = on_cancel
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled."""
        await listen_channel(self._bus, keys.CANCEL_CHANNEL, self._handle, self.subscribed)

    def _handle(self, payload: bytes) -> None:
        try:
            cancel = decode_broadcast(payload)
        except DecodeError:
            log.warning("ignoring malformed cancel broadcast")
            return
        self._fence.observe(cancel.session_id, cancel.turn_id)
        if self._on_cancel is not None:
            try:
                self._on_cancel(cancel)
            except Exception:
                log.exception("cancel handler failed")
