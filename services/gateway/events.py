"""The client side of the WebSocket protocol (docs/protocol.md): what clients send, what they get."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class _ClientEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Ping(_ClientEvent):
    """Keep-alive; answered with `pong`."""

    type: Literal["ping"]


class ResponseCancel(_ClientEvent):
    """Stop the current reply, like a barge-in."""

    type: Literal["response.cancel"]


class SessionClose(_ClientEvent):
    """End the session; the server closes with 1000."""

    type: Literal["session.close"]


class AudioPlayed(_ClientEvent):
    """How much of a turn's reply audio the client actually played."""

    type: Literal["audio.played"]
    turn_id: int = Field(ge=0)
    played_ms: float = Field(ge=0, allow_inf_nan=False)


MAX_INSTRUCTIONS_CHARS = 2000


class SessionOptions(BaseModel):
    """Options a client may change after connecting; a field left out keeps its value."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    output_sample_rate: int | None = Field(default=None, ge=8_000, le=48_000)
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS_CHARS)
    economy: bool | None = None


class SessionUpdate(_ClientEvent):
    """Change session options."""

    type: Literal["session.update"]
    session: SessionOptions


class SessionUsageRequest(_ClientEvent):
    """Ask for the session's usage so far; answered with `session.usage`."""

    type: Literal["session.usage"]


ClientEvent: TypeAlias = Annotated[
    Ping | ResponseCancel | SessionClose | AudioPlayed | SessionUpdate | SessionUsageRequest,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
# A known type with bad fields gets its own code, so a client can tell a typo from a bad value.
_INVALID_CODES = {"session.update": "invalid_session_update"}
_KNOWN_TYPES = {"ping", "response.cancel", "session.close", "audio.played", "session.update", "session.usage"}


class ClientEventError(ValueError):
    """A text frame that is not a valid client event; `code` goes back in the error event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client_event(text: str) -> ClientEvent:
    """Parse one text frame; raises ClientEventError with `bad_json` or `unknown_event`."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # deep nesting overflows the parser's stack
        raise ClientEventError("bad_json", "text frames must be JSON objects") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ClientEventError("bad_json", 'text frames must be JSON objects with a string "type"')
    kind = data["type"]
    if kind not in _KNOWN_TYPES:
        raise ClientEventError("unknown_event", f"unknown event type {kind[:64]!r}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ClientEventError(_INVALID_CODES.get(kind, "bad_event"), _describe(kind, exc)) from exc


def _describe(kind: str, exc: ValidationError) -> str:
    """A short, safe summary of what is wrong (never echoes the client's values back)."""
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"][1:]) or "event"
        problems.append(f"{where}: {error['msg']}")
    return f"invalid {kind}: " + "; ".join(problems)


def server_event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server → client event."""
    return {"type": type_, **fields}


def error_event(code: str, message: str, turn_id: int | None = None) -> dict[str, Any]:
    """An `error` event; the session goes on."""
    event = server_event("error", code=code, message=message)
    if turn_id is not None:
        event["turn_id"] = turn_id
    return event
