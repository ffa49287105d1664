"""The client's WebSocket as the native session sees it: what the session sends is translated into OpenAI
events on the way out (by the session's one writer task, so in order); what the client sends is read as is."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

from services.gateway.openai_realtime.translator import Translator

log = logging.getLogger(__name__)


class OpenAIWire:
    """A `WebSocketLike` over the client's socket; `translator` is set by the session before it sends."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.translator: Translator | None = None

    @property
    def application_state(self) -> WebSocketState:
        """The underlying socket's state, as the app sees it."""
        return self.websocket.application_state

    async def receive(self) -> Message:
        """The client's next message (OpenAI client events are handled by the session)."""
        return await self.websocket.receive()

    async def send_json(self, data: Any) -> None:
        """Send the OpenAI events for one native event (often none)."""
        assert self.translator is not None
        for event in self._translated(self.translator.event, data):
            await self._send(event)

    async def send_bytes(self, data: bytes) -> None:
        """Reply audio goes out as `response.output_audio.delta` (base64 PCM)."""
        assert self.translator is not None
        for event in self._translated(self.translator.audio, data):
            await self._send(event)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the client's socket."""
        await self.websocket.close(code=code, reason=reason)

    @staticmethod
    def _translated(translate: Callable[[Any], list[dict[str, Any]]], data: Any) -> list[dict[str, Any]]:
        """A translation bug loses that one event (logged), never the session."""
        try:
            return translate(data)
        except Exception:
            kind = data.get("type") if isinstance(data, dict) else "audio"
            log.exception("event translation failed", extra={"kind": str(kind)})
            return []

    async def _send(self, event: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
