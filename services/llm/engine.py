"""The LLM engine seam: a chat message, the error engines raise, and the Generator protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of the conversation as the model sees it."""

    role: Literal["system", "user", "assistant"]
    text: str


class GenerationError(Exception):
    """The model or its vendor failed to produce a reply; the message never carries credentials."""


class Generator(Protocol):
    """Streams a reply as text deltas; closing or cancelling the consumer stops generation promptly."""

    name: str

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield text deltas of the assistant's reply to `messages` as they are produced."""
        ...

    async def aclose(self) -> None:
        """Release the model or the connections."""
        ...
