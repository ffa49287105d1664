"""A WebRTC session with the gateway for tests: `clients.talk.rtc`'s link, with everything that arrives
recorded (events on the data channel, reply audio off the remote track)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from clients.talk.rtc import RtcLink, open_link


@dataclass
class Received:
    """What one session received, as it arrived (monotonic times)."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    audio: list[tuple[float, bytes]] = field(default_factory=list)
    """Reply PCM (48 kHz) between audio.start and audio.end, as the link takes it off the track."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one type, in order."""
        return [event for _, event in self.events if event.get("type") == kind]

    def at(self, kind: str) -> float | None:
        """When the first event of `kind` arrived."""
        return next((at for at, event in self.events if event.get("type") == kind), None)

    async def until(self, check: Callable[[Received], bool], within: float) -> None:
        """Wait until `check` holds (raises TimeoutError)."""
        async with asyncio.timeout(within):
            while not check(self):
                self.changed.clear()
                await self.changed.wait()

    async def event(self, kind: str, within: float = 10.0) -> dict[str, Any]:
        """The first event of `kind` (waiting for it)."""
        await self.until(lambda got: bool(got.of(kind)), within)
        return self.of(kind)[0]

    def audio_ms(self, after: float = 0.0) -> float:
        """Reply audio received after `after` (monotonic), in ms."""
        return sum(len(pcm) for at, pcm in self.audio if at >= after) / 96.0


async def _record(link: RtcLink, received: Received) -> None:
    async for message in link:
        now = time.monotonic()
        if isinstance(message, bytes):
            received.audio.append((now, message))
        else:
            received.events.append((now, json.loads(message)))
        received.changed.set()


@asynccontextmanager
async def rtc_session(offer_url: str, token: str | None = None) -> AsyncIterator[tuple[RtcLink, Received]]:
    """A connected link and what it receives, hung up on the way out."""
    link = await open_link(offer_url, token)
    received = Received()
    task = asyncio.create_task(_record(link, received))
    try:
        yield link, received
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.close()


async def send_event(link: RtcLink, **event: Any) -> None:
    """One client event on the data channel."""
    await link.send(json.dumps(event))
