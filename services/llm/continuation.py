"""Taking a reply over part-way (its replica died, or its handler failed and is run again): what was
already said is read back, the model is asked to go on from there, and a model that starts its answer
over anyway does not get to say it twice."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from services.llm.engine import ChatMessage
from shared import keys
from shared.bus import WORK_QUEUE_RETENTION_S
from shared.schema import ReplyRequested

SAID_TTL_S = int(WORK_QUEUE_RETENTION_S)
"""How long a session's sent phrases are kept after the last one: as long as a request may wait in the
queue (and they go with the session's other keys when it ends)."""
SAID_KEPT = 500
"""The session's newest items kept: a reply taken over needs only its own, the latest."""
_WORD = re.compile(r"\S+")
_SEP = "\x1f"


def said_key(request: ReplyRequested) -> str:
    """The session's list of sent phrases (one per session, so it ends with the session's keys)."""
    return keys.reply_said(request.session_id)


def said_item(request: ReplyRequested, text: str) -> str:
    """A phrase of `request`'s reply as kept in the list, tagged with the request: the same entry delivered
    again (to another replica, a retry, a requeue) finds it; any other request, even of the same turn,
    does not."""
    return _tag(request) + text


def _tag(request: ReplyRequested) -> str:
    digest = hashlib.blake2b(request.model_dump_json().encode(), digest_size=8).hexdigest()
    return f"{request.turn_id}:{digest}{_SEP}"


REPLY_ENDED = "\x00"
"""Recorded after a reply's last phrase, with its ReplyDone: a replica handed the request again (the one
that finished it died before acking it) has nothing to add."""


@dataclass(frozen=True, slots=True)
class Said:
    """What went out of a reply before: its phrases, and whether it ended."""

    phrases: list[str]
    ended: bool


async def said_so_far(redis: Redis, request: ReplyRequested) -> Said:
    """The phrases of the request's reply that went out before, in order (none for a fresh reply)."""
    raw: Any = await redis.lrange(said_key(request), 0, -1)
    tag = _tag(request)
    decoded = (bytes(item).decode() for item in raw)
    items = [item[len(tag) :] for item in decoded if item.startswith(tag)]
    ended = REPLY_ENDED in items
    return Said([item for item in items if item != REPLY_ENDED], ended)


def continuation_prompt(prompt: Sequence[ChatMessage], said: Sequence[str]) -> list[ChatMessage]:
    """The prompt with what was said as the start of the assistant's answer (prefill), for the model to
    continue; unchanged when nothing was said."""
    if not said:
        return list(prompt)
    return [*prompt, ChatMessage("assistant", " ".join(said))]


async def without_restatement(deltas: AsyncIterator[str], said: Sequence[str]) -> AsyncIterator[str]:
    """`deltas` minus a leading restatement of `said`, word for word (whitespace aside): engines without
    prefill (most OpenAI-compatible servers, the bundled model's chat template) answer anew, and a model
    that does so with the same words would otherwise say them twice. Text that departs from `said`
    before its end is kept whole: it is new words."""
    said_words = " ".join(said).split()
    held = ""
    async for delta in deltas:
        if not said_words:
            yield delta
            continue
        held += delta
        words = _WORD.findall(held)
        # A word is complete once whitespace follows it; the last one may still grow.
        complete = words if held[-1:].isspace() else words[:-1]
        if complete[: len(said_words)] != said_words[: len(complete)]:
            yield held  # departed from what was said: new words
            said_words, held = [], ""
        elif len(complete) >= len(said_words):
            yield held[_end_of_word(held, len(said_words)) :]  # said again in full: drop it
            said_words, held = [], ""
    words = _WORD.findall(held)
    if words and words != said_words[: len(words)]:
        yield held  # the stream ended on new words (a restatement cut short is dropped)


def _end_of_word(text: str, count: int) -> int:
    """Index just past the `count`-th word of `text`."""
    end = 0
    for _, match in zip(range(count), _WORD.finditer(text), strict=False):
        end = match.end()
    return end
