"""Prefill hints to the LLM replicas while the user speaks (services/llm/prefill.py hears them)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from shared import keys
from shared.bus import Bus, cancel_safe
from shared.schema import ReplyPrefill, encode_broadcast

log = logging.getLogger(__name__)


async def hint_prefill(bus: Bus, session_id: str, text: str, instructions: str, economy: bool) -> None:
    """Tell the LLM replicas what the session's next prompt will begin with: its history and `text`, the
    words heard so far ("" as the user starts to speak). Lost hints cost nothing but the head start."""
    hint = ReplyPrefill(
        session_id=session_id, turn_id=0, seq=0, text=text[:4000], instructions=instructions, economy=economy
    )
    try:
        await cancel_safe(bus.redis.publish(keys.LLM_PREFILL_CHANNEL, encode_broadcast(hint)))
    except RedisError as exc:
        log.debug("prefill hint not sent", extra={"session_id": session_id, "error": type(exc).__name__})
