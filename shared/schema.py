"""Every message that crosses Redis: one closed union, encoded and decoded only here."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# Field names inside a stream entry. Audio travels raw in its own field, never inside the JSON.
FIELD_DATA = b"data"
FIELD_AUDIO = b"audio"


class BusMessage(BaseModel):
    """Common envelope: who it belongs to, which turn, and its place in the sender's sequence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str = Field(min_length=1, max_length=64)
    turn_id: int = Field(ge=0)
    seq: int = Field(ge=0)
    sent_at: float = Field(default_factory=time.time)


class SessionOpened(BusMessage):
    """Gateway → ASR dispatch: a new session whose audio stream needs an owner."""

    kind: Literal["session.opened"] = "session.opened"
    sample_rate: int = 16000


class AudioFrame(BusMessage):
    """Gateway → ASR (per-session stream): one chunk of the user's PCM, s16le mono."""

    kind: Literal["audio.frame"] = "audio.frame"
    audio: bytes = Field(exclude=True)


class SessionClosed(BusMessage):
    """Gateway → ASR (per-session stream): the client is gone; the owner releases the session."""

    kind: Literal["session.closed"] = "session.closed"


class AsrOptions(BusMessage):
    """Gateway → ASR (per-session stream, in order with the audio): how this session's utterances end from
    this point of its audio on (OpenAI Realtime clients' `turn_detection`). The ASR's own settings hold until
    a session sends one."""

    kind: Literal["asr.options"] = "asr.options"
    turn_detection: bool = True
    """False (push-to-talk): no voice activity detection at all; the audio is buffered until an
    `InputBuffer` commit (or clear)."""
    max_silence_ms: int | None = Field(default=None, ge=0, le=10_000)
    """The longest silence that ends an utterance (the turn model may still end a finished question at the
    first pause); None: the ASR's own setting."""


class InputBuffer(BusMessage):
    """Gateway → ASR (per-session stream, in order with the audio): `commit` ends the utterance in progress
    now (push-to-talk: transcribes everything buffered since the last commit or clear), `clear` drops it."""

    kind: Literal["input.buffer"] = "input.buffer"
    action: Literal["commit", "clear"]


class SpeechStarted(BusMessage):
    """ASR → gateway: the user started talking (the gateway opens a new turn, which cancels the old)."""

    kind: Literal["speech.started"] = "speech.started"
    at_ms: int = Field(ge=0)
    utterance: int = Field(default=0, ge=0)
    """Identifies the utterance across its events: the seq of the audio frame in which speech was confirmed
    (rising within a session, and the same for a replica that takes the session over)."""


class SpeechSustained(BusMessage):
    """ASR → gateway: the utterance has lasted the barge-in minimum, long enough to cut a playing reply."""

    kind: Literal["speech.sustained"] = "speech.sustained"
    utterance: int = Field(ge=0)


class TranscriptPartial(BusMessage):
    """ASR → gateway: the words of an utterance in progress that are settled so far (they only grow)."""

    kind: Literal["transcript.partial"] = "transcript.partial"
    text: str
    utterance: int = Field(ge=0)


class TranscriptSpeculative(BusMessage):
    """ASR → gateway: the text of an utterance whose speaker has fallen silent, before the end of the turn is
    confirmed. The gateway may start the reply on it, holding its output until `TranscriptFinal` for the
    same utterance confirms the text, and dropping it if `SpeechResumed` says the speaker went on."""

    kind: Literal["transcript.speculative"] = "transcript.speculative"
    text: str
    utterance: int = Field(ge=0)
    speech_ended_at: float
    pause_ms: int = Field(ge=0)
    """Where in the session's audio the transcribed speech ends: names this pause of the utterance."""


class SpeechResumed(BusMessage):
    """ASR → gateway: the speaker went on after a pause: a speculative transcript of it is void."""

    kind: Literal["speech.resumed"] = "speech.resumed"
    utterance: int = Field(ge=0)
    pause_ms: int = Field(ge=0)
    """The pause that ended (see `TranscriptSpeculative.pause_ms`): speculations up to it are void."""


class TranscriptFinal(BusMessage):
    """ASR → gateway: the final text of one utterance (empty when it held no words: noise, a cough)."""

    kind: Literal["transcript.final"] = "transcript.final"
    text: str
    utterance: int = Field(default=0, ge=0)
    speech_ended_at: float
    """Wall-clock time the user stopped talking: the start of the turn's latency budget."""


class ClientTool(BaseModel):
    """A function the client runs itself (OpenAI Realtime clients): a reply may end by calling it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ReplyRequested(BusMessage):
    """Gateway → LLM work queue: answer the user's utterance for this turn."""

    kind: Literal["reply.requested"] = "reply.requested"
    text: str
    output_sample_rate: int = 16000
    speech_ended_at: float
    instructions: str = Field(default="", max_length=4000)
    """The session's own instructions, appended to the system prompt."""
    economy: bool = False
    """Economy mode: a shorter reply (tokens and sentences capped), from a cheaper model if one is set."""
    tools: list[ClientTool] = Field(default_factory=list, max_length=32)
    """Client-side functions the reply may call (engines with function calling); a call ends the reply."""


class ReplyPhrase(BusMessage):
    """LLM → TTS work queue and gateway: one speakable phrase of the reply; `seq` is its index."""

    kind: Literal["reply.phrase"] = "reply.phrase"
    text: str
    output_sample_rate: int = 16000


class FunctionCall(BusMessage):
    """LLM → gateway: the reply calls one of the request's client tools (before its `ReplyDone`); the client
    runs it and sends the result back. `seq` is the call's index within the reply."""

    kind: Literal["function.call"] = "function.call"
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=16_000)


class ReplyDone(BusMessage):
    """LLM → gateway: the reply is complete after `phrase_count` phrases."""

    kind: Literal["reply.done"] = "reply.done"
    phrase_count: int = Field(ge=0)


class ReplyUsage(BusMessage):
    """LLM → gateway: what one reply cost, sent once its generation ended (done, failed or cancelled). The
    gateway counts it only for a reply released to the client, never for a discarded speculation."""

    kind: Literal["reply.usage"] = "reply.usage"
    engine: str = Field(max_length=64)
    model: str = Field(max_length=200)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    estimated: bool = False
    """The engine gave no figures (or not for all of the reply): the counts are estimates."""
    tool_calls: int = Field(default=0, ge=0)
    tool_failures: int = Field(default=0, ge=0)
    phrase_count: int = Field(default=0, ge=0)
    economy: bool = False


class AudioChunk(BusMessage):
    """TTS → gateway: reply PCM for phrase `phrase_seq`; `seq` is the chunk's index within the phrase."""

    kind: Literal["audio.chunk"] = "audio.chunk"
    phrase_seq: int = Field(ge=0)
    sample_rate: int
    audio: bytes = Field(exclude=True)


class PhraseAudioDone(BusMessage):
    """TTS → gateway: phrase `phrase_seq` is fully synthesized in `chunk_count` chunks."""

    kind: Literal["phrase.audio_done"] = "phrase.audio_done"
    phrase_seq: int = Field(ge=0)
    chunk_count: int = Field(ge=0)


class Cancel(BusMessage):
    """Gateway → every replica (broadcast): all work of turns older than `turn_id` is stale."""

    kind: Literal["cancel"] = "cancel"


class ReplyPrefill(BusMessage):
    """Gateway → every LLM replica (broadcast, best effort, never a stream entry): the user is speaking and
    these are their words so far. An idle local model reads the prompt up to them ahead of the request, so
    the reply's prompt is mostly read when the request comes. Losing one costs only that head start."""

    kind: Literal["reply.prefill"] = "reply.prefill"
    text: str = Field(default="", max_length=4000)
    instructions: str = Field(default="", max_length=4000)
    economy: bool = False


class ServiceError(BusMessage):
    """Any service → gateway: a turn failed; the client gets an error event."""

    kind: Literal["error"] = "error"
    code: str
    message: str


Message: TypeAlias = Annotated[
    SessionOpened
    | AudioFrame
    | SessionClosed
    | AsrOptions
    | InputBuffer
    | SpeechStarted
    | SpeechSustained
    | TranscriptPartial
    | TranscriptSpeculative
    | SpeechResumed
    | TranscriptFinal
    | ReplyRequested
    | ReplyPhrase
    | FunctionCall
    | ReplyDone
    | ReplyUsage
    | AudioChunk
    | PhraseAudioDone
    | Cancel
    | ServiceError,
    Field(discriminator="kind"),
]

_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


class DecodeError(ValueError):
    """A stream entry or channel payload that is not a valid message."""


def encode(message: Message) -> dict[bytes, bytes]:
    """Turn a message into stream-entry fields: JSON envelope plus raw audio where there is any."""
    fields = {FIELD_DATA: message.model_dump_json().encode()}
    if isinstance(message, AudioFrame | AudioChunk):
        fields[FIELD_AUDIO] = message.audio
    return fields


def decode(fields: dict[bytes, bytes]) -> Message:
    """Rebuild a message from stream-entry fields; raises DecodeError on anything malformed."""
    try:
        payload = json.loads(fields[FIELD_DATA])
        if not isinstance(payload, dict):
            raise DecodeError("message payload is not an object")
        if FIELD_AUDIO in fields:
            payload["audio"] = fields[FIELD_AUDIO]
        return _ADAPTER.validate_python(payload)
    except (KeyError, ValueError, RecursionError, ValidationError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"malformed bus message: {type(exc).__name__}") from exc


def encode_broadcast(message: Cancel | ReplyPrefill) -> bytes:
    """Payload for a pub/sub channel: cancels or prefill hints (no audio ever travels there)."""
    return message.model_dump_json().encode()


def decode_broadcast(payload: bytes) -> Cancel:
    """Parse a cancel-channel payload."""
    try:
        return Cancel.model_validate_json(payload)
    except ValidationError as exc:
        raise DecodeError("malformed cancel broadcast") from exc


def decode_prefill(payload: bytes) -> ReplyPrefill:
    """Parse a prefill-channel payload."""
    try:
        return ReplyPrefill.model_validate_json(payload)
    except ValidationError as exc:
        raise DecodeError("malformed prefill hint") from exc
