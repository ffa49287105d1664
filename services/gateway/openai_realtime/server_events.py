"""Building OpenAI Realtime server events: ids, the `error` shape, a response object, usage."""

from __future__ import annotations

import uuid
from typing import Any

from services.gateway.usage import TurnUsage

# Native error codes that are the server's fault (or the mesh's), not the client's.
_SERVER_CODES = {"turn_failed", "session_failed", "server_busy", "internal_error"}


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (`event_…`, `item_…`, `resp_…`)."""
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


def server_event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server event with its own `event_id`."""
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(
    code: str, message: str, *, param: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """An `error` event in the API's shape; `event_id` names the client event it answers, if known."""
    kind = "server_error" if code in _SERVER_CODES else "invalid_request_error"
    error = {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}
    return server_event("error", error=error)


def usage_object(usage: TurnUsage | None) -> dict[str, Any] | None:
    """`response.done.usage` from the session's usage record of the turn (text tokens: the LLM's)."""
    if usage is None:
        return None
    return {
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "input_token_details": {"text_tokens": usage.input_tokens, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": usage.output_tokens, "audio_tokens": 0},
    }
