"""The conversation per session, kept in Redis so any LLM replica can answer the next turn."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from services.llm.engine import ChatMessage
from shared import keys
from shared.bus import SESSION_TTL_SECONDS


async def load_history(redis: Redis, session_id: str) -> list[ChatMessage]:
    """The stored user/assistant messages, oldest first."""
    raw = await redis.lrange(keys.history(session_id), 0, -1)
    messages: list[ChatMessage] = []
    for item in raw:
        data = json.loads(item)
        if data.get("role") in ("user", "assistant") and isinstance(data.get("text"), str):
            messages.append(ChatMessage(role=data["role"], text=data["text"]))
    return messages


async def append_exchange(redis: Redis, session_id: str, user: str, assistant: str, keep: int) -> None:
    """Add one exchange and keep only the newest `keep` messages."""
    key = keys.history(session_id)
    entries = [json.dumps({"role": "user", "text": user})]
    if assistant:
        entries.append(json.dumps({"role": "assistant", "text": assistant}))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, *entries)
        pipe.ltrim(key, -keep, -1)
        pipe.expire(key, SESSION_TTL_SECONDS)
        await pipe.execute()
