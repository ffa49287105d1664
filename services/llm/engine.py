"""The LLM engine seam: a chat message, per-reply options and usage, the error engines raise, and the
Generator protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from shared.schema import ClientTool


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of the conversation as the model sees it."""

    role: Literal["system", "user", "assistant", "tool_call", "tool"]
    text: str
    """The words; for a `tool_call` the call's JSON arguments, for a `tool` message the call's output."""
    call_id: str = ""
    """`tool_call` and `tool`: the client-side function call they belong to."""
    name: str = ""
    """`tool_call`: the function called."""


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Per-reply overrides of the engine's configuration (economy mode uses them)."""

    max_tokens: int | None = None
    """A lower cap on the reply's tokens than the engine's own; None keeps the engine's."""
    model: str | None = None
    """Another model of the same vendor for this reply (remote engines only); None keeps the engine's."""
    client_tools: tuple[ClientTool, ...] = ()
    """Functions the client runs (OpenAI Realtime clients): engines with function calling offer them, and a
    call to one ends the reply (recorded in `Usage.function_calls`); other engines ignore them."""


@dataclass(frozen=True, slots=True)
class FunctionCallRequest:
    """A call of a client-side function the reply ended with."""

    call_id: str
    name: str
    arguments: str


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
    function_calls: list[FunctionCallRequest] = field(default_factory=list)
    """Client-side function calls the reply ended with: the client runs them, not the service."""

    def add_tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Add one model step's counts as the engine reported them."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.reported = True


def paired_tool_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The messages with only complete function calls: a `tool_call` followed by its `tool` output (a call
    the client never answered, or an output without its call, would make chat APIs refuse the prompt)."""
    answered = {m.call_id for m in messages if m.role == "tool"}
    called = {m.call_id for m in messages if m.role == "tool_call" and m.call_id in answered}
    return [m for m in messages if m.role not in ("tool_call", "tool") or m.call_id in called]


def as_text_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """For engines without client-side function calling: calls and outputs told as plain text."""
    plain: list[ChatMessage] = []
    for m in messages:
        if m.role == "tool_call":
            plain.append(ChatMessage("assistant", f"(I called {m.name} with {m.text})"))
        elif m.role == "tool":
            plain.append(ChatMessage("user", f"(The function returned: {m.text})"))
        else:
            plain.append(m)
    return plain


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


@runtime_checkable
class Prefiller(Protocol):
    """A local engine that can read a prompt ahead of its request (the user is still speaking)."""

    async def prefill(self, messages: Sequence[ChatMessage]) -> int:
        """Read the prompt `messages` would make, up to and including the last message's words (not what
        closes that message), into the model's cache when the model is idle; return the tokens read (0 when
        busy or already cached). A generation started meanwhile stops it within one token."""
        ...
