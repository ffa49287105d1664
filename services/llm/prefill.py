"""Prefill hints: while a user speaks, the gateway broadcasts the words heard so far; an idle local model
reads the prompt up to them, so the reply's request finds most of its prompt in the model's cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared import keys
from shared.bus import Bus
from shared.schema import DecodeError, ReplyPrefill, decode_prefill
from shared.turns import listen_channel

log = logging.getLogger(__name__)

PrefillHandler = Callable[[ReplyPrefill], Awaitable[None]]


class PrefillHints:
    """Hears the hints (pub/sub, every replica) and hands the newest to `prefill`, one at a time: hints that
    arrive during one prefill are replaced by the latest, which already holds their words."""

    def __init__(self, bus: Bus, prefill: PrefillHandler) -> None:
        self._bus = bus
        self._prefill = prefill
        self._latest: ReplyPrefill | None = None
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Listen and prefill until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(listen_channel(self._bus, keys.LLM_PREFILL_CHANNEL, self._hear))
            while True:
                await self._wake.wait()
                self._wake.clear()
                hint, self._latest = self._latest, None
                if hint is None:
                    continue
                try:
                    await self._prefill(hint)
                except Exception as exc:  # only a head start: the request reads its whole prompt anyway
                    log.warning(
                        "prefill failed", extra={"session_id": hint.session_id, "error": type(exc).__name__}
                    )

    def _hear(self, payload: bytes) -> None:
        try:
            self._latest = decode_prefill(payload)
        except DecodeError:
            log.warning("ignoring malformed prefill hint")
            return
        self._wake.set()
