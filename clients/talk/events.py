"""The server events the talk client acts on (docs/protocol.md), as typed models."""

from __future__ import annotations

import json
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class TalkError(Exception):
    """The conversation failed: a server error, an early close, or no reply in time."""


class _Event(BaseModel):
    # Extra fields are ignored so the server may grow.
    model_config = ConfigDict(frozen=True, extra="ignore")


class SessionStarted(_Event):
    """First event of every session."""

    type: Literal["session.started"]
    session_id: str
    output_sample_rate: int
    resume: str | None = None
    """The key to resume this session with if the connection drops (a secret: never logged)."""
    resume_window_s: float = 0.0
    resumed: bool = False


class TurnEvent(_Event):
    """An event that only names a turn: a new utterance, a cleared reply, or the end of reply audio."""

    type: Literal["speech.started", "audio.clear", "audio.end"]
    turn_id: int


class TranscriptPartial(_Event):
    """The words heard so far in a turn."""

    type: Literal["transcript.partial"]
    turn_id: int
    text: str


class TranscriptFinal(_Event):
    """What the user said in a turn."""

    type: Literal["transcript.final"]
    turn_id: int
    text: str


class ReplyText(_Event):
    """One phrase of a turn's reply."""

    type: Literal["reply.text"]
    turn_id: int
    seq: int
    text: str


class AudioStart(_Event):
    """Reply audio for the turn follows in binary frames."""

    type: Literal["audio.start"]
    turn_id: int
    sample_rate: int
    latency_ms: float | None = None


class ReplyTruncated(_Event):
    """The reply of the turn was interrupted; the user heard `text` (`played_ms` of audio)."""

    type: Literal["reply.truncated"]
    turn_id: int
    played_ms: float
    text: str


class ErrorEvent(_Event):
    """A server error; only `turn_failed` ends a conversation."""

    type: Literal["error"]
    code: str
    message: str
    turn_id: int | None = None


ServerEvent: TypeAlias = Annotated[
    SessionStarted
    | TurnEvent
    | TranscriptPartial
    | TranscriptFinal
    | ReplyText
    | AudioStart
    | ReplyTruncated
    | ErrorEvent,
    Field(discriminator="type"),
]
_EVENTS: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


def decode(text: str) -> tuple[dict[str, object], ServerEvent | None]:
    """The JSON object of a text frame, and its typed event or None for a type this client does not use."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TalkError(f"server sent a text frame that is not a JSON object: {text[:200]}")
    try:
        return data, _EVENTS.validate_python(data)
    except ValidationError as exc:
        if all(error["type"] == "union_tag_invalid" for error in exc.errors()):
            return data, None  # such as `pong`, or an event newer than this client
        raise TalkError(f"malformed server event: {text[:200]}") from exc
