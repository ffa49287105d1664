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


ClientEvent: TypeAlias = Annotated[Ping | ResponseCancel | SessionClose, Field(discriminator="type")]
_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)


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
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ClientEventError("unknown_event", f"unknown event type {data['type'][:64]!r}") from exc


def server_event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server → client event."""
    return {"type": type_, **fields}


def error_event(code: str, message: str, turn_id: int | None = None) -> dict[str, Any]:
    """An `error` event; the session goes on."""
    event = server_event("error", code=code, message=message)
    if turn_id is not None:
        event["turn_id"] = turn_id
    return event
