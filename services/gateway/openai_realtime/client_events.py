"""The client events of OpenAI's Realtime protocol (GA) that voxmesh reads, parsed and checked here only.

Fields voxmesh does not use are ignored (the protocol grows); fields it uses are checked strictly, and a
bad one is a `ProtocolError` naming the field, as the API's own `invalid_request_error` does.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

MAX_TEXT_CHARS = 4000
MAX_TOOLS = 32


class ProtocolError(ValueError):
    """A client event voxmesh refuses; it becomes an `error` event and the session goes on."""

    def __init__(self, code: str, message: str, *, param: str | None = None, event_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Event(_Model):
    event_id: str | None = Field(default=None, max_length=512)


class AudioFormat(_Model):
    """`audio/pcm` at 24 kHz is what voxmesh speaks; G.711 is refused."""

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None


class TurnDetection(_Model):
    """Server VAD (or semantic VAD: voxmesh's turn model judges the words, which is what it means)."""

    type: Literal["server_vad", "semantic_vad"]
    silence_duration_ms: int | None = Field(default=None, ge=0, le=10_000)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=10_000)
    threshold: float | None = Field(default=None, ge=0, le=1)
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None


class Transcription(_Model):
    """Input transcription; its model and language are the server's (Whisper)."""

    model: str | None = Field(default=None, max_length=200)
    language: str | None = Field(default=None, max_length=16)
    prompt: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)


class AudioInput(_Model):
    """`session.audio.input`; a field sent as null (turn detection, transcription) turns it off."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None


class VoiceId(_Model):
    """A custom voice, by id."""

    id: str = Field(max_length=200)


class AudioOutput(_Model):
    """`session.audio.output`: the format, and a voice (voxmesh has one; the name is kept as given)."""

    format: AudioFormat | None = None
    voice: str | VoiceId | None = Field(default=None, max_length=200)
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


class Audio(_Model):
    """`session.audio`."""

    input: AudioInput | None = None
    output: AudioOutput | None = None


class FunctionTool(_Model):
    """A function the client runs itself: the model may end a response by calling it."""

    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = Field(default="", max_length=MAX_TEXT_CHARS)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


Modalities: TypeAlias = list[Literal["audio", "text"]]


class Session(_Model):
    """`session` of `session.update` (only the fields voxmesh acts on or reports)."""

    type: Literal["realtime"] = "realtime"
    instructions: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    output_modalities: Modalities | None = Field(default=None, min_length=1, max_length=1)
    audio: Audio | None = None
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | None = None
    max_output_tokens: int | Literal["inf"] | None = None


class SessionUpdate(_Event):
    """Change the session's configuration."""

    type: Literal["session.update"]
    session: Session
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)
    """The `session` object as sent, to tell a field sent as null from one left out."""


class AudioAppend(_Event):
    """Microphone audio, base64 PCM (24 kHz s16le mono)."""

    type: Literal["input_audio_buffer.append"]
    audio: bytes

    @field_validator("audio", mode="before")
    @classmethod
    def _decode(cls, value: object) -> bytes:
        if not isinstance(value, str):
            raise ValueError("must be a base64 string")
        try:
            pcm = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("is not valid base64") from exc
        if len(pcm) % 2:
            raise ValueError("must be whole 16-bit samples")
        return pcm


class AudioCommit(_Event):
    """Commit the input buffer (server VAD does this by itself)."""

    type: Literal["input_audio_buffer.commit"]


class AudioClear(_Event):
    """Clear the input buffer."""

    type: Literal["input_audio_buffer.clear"]


class Content(_Model):
    """One part of a message item."""

    type: Literal["input_text", "input_audio", "input_image", "output_text", "output_audio", "text"]
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    transcript: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)


class MessageItem(_Model):
    """A message the client adds to the conversation."""

    type: Literal["message"]
    id: str | None = Field(default=None, max_length=64)
    role: Literal["user", "assistant", "system"]
    content: list[Content] = Field(min_length=1, max_length=16)

    def text(self) -> str:
        """The message's text parts, joined."""
        return " ".join(part.text or part.transcript or "" for part in self.content).strip()


class FunctionCallItem(_Model):
    """A function call the client records in the conversation."""

    type: Literal["function_call"]
    id: str | None = Field(default=None, max_length=64)
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(default="", max_length=MAX_TEXT_CHARS)


class FunctionOutputItem(_Model):
    """The result of a function call the model asked for."""

    type: Literal["function_call_output"]
    id: str | None = Field(default=None, max_length=64)
    call_id: str = Field(min_length=1, max_length=128)
    output: str = Field(max_length=MAX_TEXT_CHARS)


Item: TypeAlias = Annotated[MessageItem | FunctionCallItem | FunctionOutputItem, Field(discriminator="type")]


class ItemCreate(_Event):
    """Add an item to the conversation."""

    type: Literal["conversation.item.create"]
    item: Item
    previous_item_id: str | None = None


class ItemTruncate(_Event):
    """The client played only `audio_end_ms` of an assistant item: keep only the heard part."""

    type: Literal["conversation.item.truncate"]
    item_id: str = Field(max_length=64)
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ItemUnsupported(_Event):
    """Item operations voxmesh does not offer (its history is the heard conversation, kept in Redis)."""

    type: Literal["conversation.item.delete", "conversation.item.retrieve", "output_audio_buffer.clear"]


class ResponseOptions(_Model):
    """`response` of `response.create`: overrides for this response only."""

    conversation: str | None = None
    instructions: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    output_modalities: Modalities | None = Field(default=None, min_length=1, max_length=1)
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | None = None
    input: list[dict[str, Any]] | None = None


class ResponseCreate(_Event):
    """Make a response now (after text or a function's output; server VAD makes them for speech)."""

    type: Literal["response.create"]
    response: ResponseOptions = Field(default_factory=ResponseOptions)


class ResponseCancel(_Event):
    """Stop the response in progress."""

    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent: TypeAlias = Annotated[
    SessionUpdate | AudioAppend | AudioCommit | AudioClear | ItemCreate | ItemTruncate | ItemUnsupported
    | ResponseCreate | ResponseCancel,
    Field(discriminator="type"),
]  # fmt: skip
_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
_KNOWN = {
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "conversation.item.truncate", "conversation.item.delete",
    "conversation.item.retrieve", "output_audio_buffer.clear", "response.create", "response.cancel",
}  # fmt: skip


def parse_client_event(text: str) -> ClientEvent:
    """One text frame as a client event; raises ProtocolError (`invalid_json`, `unknown_event`,
    `invalid_value`...)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", "The message is not valid JSON.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("invalid_json", 'Client events are JSON objects with a string "type".')
    event_id = data["event_id"][:128] if isinstance(data.get("event_id"), str) else None
    kind = data["type"]
    if kind not in _KNOWN:
        raise ProtocolError(
            "unknown_event", f"Invalid value: {kind[:64]!r}. Unknown client event type.", param="type",
            event_id=event_id,
        )  # fmt: skip
    try:
        event = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"][1:] if not str(part).startswith("function-"))
        raise ProtocolError(
            "invalid_value", f"Invalid {kind}: {where or 'event'}: {error['msg']}", param=where or None,
            event_id=event_id,
        ) from exc  # fmt: skip
    if isinstance(event, SessionUpdate) and isinstance(data.get("session"), dict):
        event = event.model_copy(update={"raw": data["session"]})
    return event
