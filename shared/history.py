"""The conversation per session, kept in Redis: written by the gateway (which knows what the user heard),
read by whichever LLM replica answers the next turn."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from shared import keys
from shared.bus import SESSION_TTL_SECONDS

# Bound on what one session keeps in Redis; the LLM reads only its newest `history_messages` of it.
MAX_STORED_ENTRIES = 200


class HistoryEntry(BaseModel):
    """One message of the conversation as it happened: an assistant entry holds only what was heard."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["user", "assistant", "function_call", "function_call_output"]
    text: str
    """The words; for a function call its JSON arguments, for a function call's output the output."""
    turn_id: int
    interrupted: bool = False
    """For the assistant: the user talked over the reply, so `text` stops where playback stopped."""
    call_id: str = ""
    """For a client-side function call and its output (OpenAI Realtime clients): the call they share."""
    name: str = ""
    """For a function call: the function's name."""


async def load_history(redis: Redis, session_id: str, newest: int = MAX_STORED_ENTRIES) -> list[HistoryEntry]:
    """The newest `newest` stored entries, oldest first (malformed ones are skipped)."""
    raw = await redis.lrange(keys.history(session_id), -newest, -1)
    entries: list[HistoryEntry] = []
    for item in raw:
        try:
            entries.append(HistoryEntry.model_validate_json(item))
        except ValidationError:
            continue
    return entries


async def append_history(redis: Redis, session_id: str, entries: list[HistoryEntry]) -> None:
    """Add entries at the end, keeping the list bounded and expiring with the session."""
    if not entries:
        return
    key = keys.history(session_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, *(entry.model_dump_json() for entry in entries))
        pipe.ltrim(key, -MAX_STORED_ENTRIES, -1)
        pipe.expire(key, SESSION_TTL_SECONDS)
        await pipe.execute()
