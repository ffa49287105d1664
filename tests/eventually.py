"""Waiting in tests for something another task or process does."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import Message


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    """Poll `condition` (plain or async) until it holds; AssertionError after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def output_until(
    bus: Bus, session_id: str, done: Callable[[Message], bool], within: float
) -> list[Message]:
    """The session's output stream up to the first message `done` accepts (TimeoutError if none comes)."""
    tail = StreamTail(bus, keys.session_out(session_id), label="test", block_ms=100)
    seen: list[Message] = []
    try:
        async with asyncio.timeout(within):
            while not any(done(m) for m in seen):
                seen += [d.message for d in await tail.read()]
    finally:
        await tail.close()
    return seen
