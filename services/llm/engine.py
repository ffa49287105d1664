"""The LLM engine seam: a chat message, per-reply options and usage, the error engines raise, and the
Generator protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of the conversation as the model sees it."""

    role: Literal["system", "user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Per-reply overrides of the engine's configuration (economy mode uses them)."""

    max_tokens: int | None = None
    """A lower cap on the reply's tokens than the engine's own; None keeps the engine's."""
    model: str | None = None
    """Another model of the same vendor for this reply (remote engines only); None keeps the engine's."""


@dataclass(slots=True)
class Usage:
    """What one reply cost, filled in by the engine while it streams (summed over its tool steps)."""

    model: str = ""
    """The model that answered."""
    input_tokens: int = 0
    output_tokens: int = 0
    reported: bool = False
    """Whether the token counts are the engine's own figures; False: none came (a server that sends no
    usage, a stream stopped early) and the service estimates them."""
    tool_calls: int = 0
    tool_failures: int = 0

    def add_tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Add one model step's counts as the engine reported them."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.reported = True


class GenerationError(Exception):
    """The model or its vendor failed to produce a reply; the message never carries credentials."""


class Generator(Protocol):
    """Streams a reply as text deltas; closing or cancelling the consumer stops generation promptly."""

    name: str

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        usage: Usage | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas of the assistant's reply to `messages` as they are produced, recording into
        `usage` the model used, the tokens as the engine counts them, and the tool calls made."""
        ...

    async def aclose(self) -> None:
        """Release the model or the connections."""
        ...
