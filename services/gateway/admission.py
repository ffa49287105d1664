"""Whether an ASR replica took a new session: each replica holds at most `VOXMESH_ASR_MAX_SESSIONS` and
reads no new session while full, so a session nobody takes in time means every replica is full (or none
is running), and its client is told so instead of being left to talk to nobody."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from shared import keys
from shared.bus import Bus, cancel_safe

log = logging.getLogger(__name__)

_FIRST_LOOK_S = 0.02
_MAX_INTERVAL_S = 0.25


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def taken(bus: Bus, entry_id: bytes) -> bool | None:
    """Whether the ASR group has been handed the dispatch entry `entry_id` (entries go out in order);
    None when there is no ASR group: no replica has ever started on this Redis."""
    groups: Any = await cancel_safe(bus.redis.xinfo_groups(keys.ASR_DISPATCH))
    for group in groups:
        name = group["name"]
        if (name.decode() if isinstance(name, bytes) else name) == keys.ASR_GROUP:
            return _stream_id(group["last-delivered-id"]) >= _stream_id(entry_id)
    return None


async def wait_taken(bus: Bus, entry_id: bytes, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for an ASR replica to take the session of `entry_id`; False if none did.

    Neither a Redis that does not answer nor one no ASR replica has ever used is evidence that the
    replicas are full: then the session is not refused here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    interval = _FIRST_LOOK_S
    answered = False
    while True:
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
        try:
            took = await taken(bus, entry_id)
            if took:
                return True
            answered = answered or took is not None
        except (RedisError, OSError) as exc:
            log.warning("cannot tell whether the ASR took the session", extra={"error": str(exc)})
        if loop.time() >= deadline:
            return not answered
        interval = min(interval * 2, _MAX_INTERVAL_S)
