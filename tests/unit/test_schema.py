"""The bus schema: every message kind survives encode/decode; anything malformed is a DecodeError."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.schema import (
    FIELD_AUDIO,
    FIELD_DATA,
    AudioChunk,
    AudioFrame,
    Cancel,
    DecodeError,
    Message,
    PhraseAudioDone,
    ReplyDone,
    ReplyPhrase,
    ReplyRequested,
    ReplyUsage,
    ServiceError,
    SessionClosed,
    SessionOpened,
    SpeechStarted,
    TranscriptFinal,
    decode,
    decode_broadcast,
    encode,
    encode_broadcast,
)

pytestmark = pytest.mark.unit

# Every byte value, so anything that round-trips audio through text would mangle it.
NOT_UTF8 = bytes(range(256)) + b"\xff\xfe\x80\xc0"

ENVELOPE = {"session_id": "s-1", "turn_id": 3, "seq": 7, "sent_at": 1_700_000_000.125}

ALL_KINDS: list[Message] = [
    SessionOpened(**ENVELOPE, sample_rate=24_000),
    AudioFrame(**ENVELOPE, audio=NOT_UTF8),
    SessionClosed(**ENVELOPE),
    SpeechStarted(**ENVELOPE, at_ms=1250),
    TranscriptFinal(**ENVELOPE, text="what's the weather? ünïcødé ✓", speech_ended_at=1_700_000_000.5),
    ReplyRequested(**ENVELOPE, text="hello", output_sample_rate=22_050, speech_ended_at=1.5),
    ReplyPhrase(**ENVELOPE, text="Paris is the capital of France.", output_sample_rate=48_000),
    ReplyDone(**ENVELOPE, phrase_count=4),
    ReplyUsage(**ENVELOPE, engine="openai", model="m", input_tokens=40, output_tokens=12, tool_calls=1),
    AudioChunk(**ENVELOPE, phrase_seq=2, sample_rate=16_000, audio=NOT_UTF8),
    PhraseAudioDone(**ENVELOPE, phrase_seq=2, chunk_count=9),
    Cancel(**ENVELOPE),
    ServiceError(**ENVELOPE, code="llm_failed", message="upstream timed out"),
]


def test_every_kind_is_covered() -> None:
    kinds = {message.kind for message in ALL_KINDS}
    assert len(kinds) == len(ALL_KINDS) == 13


@pytest.mark.parametrize("message", ALL_KINDS, ids=lambda m: m.kind)
def test_round_trip(message: Message) -> None:
    decoded = decode(encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("message", ALL_KINDS, ids=lambda m: m.kind)
def test_json_never_carries_audio(message: Message) -> None:
    fields = encode(message)
    payload = json.loads(fields[FIELD_DATA])
    assert "audio" not in payload
    assert payload["kind"] == message.kind
    if isinstance(message, AudioFrame | AudioChunk):
        assert set(fields) == {FIELD_DATA, FIELD_AUDIO}
    else:
        assert set(fields) == {FIELD_DATA}


@pytest.mark.parametrize(
    "audio", [b"", b"\x00", NOT_UTF8, b"\x00\x80" * 5000], ids=["empty", "nul", "not-utf8", "large"]
)
def test_audio_bytes_survive_exactly(audio: bytes) -> None:
    frame = AudioFrame(session_id="s", turn_id=0, seq=0, audio=audio)
    chunk = AudioChunk(session_id="s", turn_id=0, seq=0, phrase_seq=0, sample_rate=16_000, audio=audio)
    for message in (frame, chunk):
        fields = encode(message)
        assert fields[FIELD_AUDIO] == audio
        decoded = decode(fields)
        assert isinstance(decoded, AudioFrame | AudioChunk)
        assert decoded.audio == audio


def test_raw_audio_field_wins_over_audio_in_json() -> None:
    fields = encode(AudioFrame(session_id="s", turn_id=0, seq=0, audio=b"\xff\x00"))
    payload = json.loads(fields[FIELD_DATA])
    payload["audio"] = "forged"
    decoded = decode({FIELD_DATA: json.dumps(payload).encode(), FIELD_AUDIO: b"\xff\x00"})
    assert isinstance(decoded, AudioFrame)
    assert decoded.audio == b"\xff\x00"


def _fields(**changes: object) -> dict[bytes, bytes]:
    """A valid SpeechStarted entry with some JSON keys changed (None removes the key)."""
    payload: dict[str, object] = {"kind": "speech.started", **ENVELOPE, "at_ms": 10}
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return {FIELD_DATA: json.dumps(payload).encode()}


def test_valid_hand_built_entry_decodes() -> None:
    assert isinstance(decode(_fields()), SpeechStarted)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="no-fields"),
        pytest.param({FIELD_AUDIO: b"\x00\x01"}, id="missing-data-field"),
        pytest.param({FIELD_DATA: b"not json"}, id="not-json"),
        pytest.param({FIELD_DATA: b"{"}, id="truncated-json"),
        pytest.param({FIELD_DATA: b"\xff\xfe\x00"}, id="not-utf8-json"),
        pytest.param({FIELD_DATA: b""}, id="empty-data"),
        pytest.param({FIELD_DATA: b"[]"}, id="json-array"),
        pytest.param({FIELD_DATA: b'"speech.started"'}, id="json-string"),
        pytest.param({FIELD_DATA: b"null"}, id="json-null"),
        pytest.param({FIELD_DATA: b"42"}, id="json-number"),
        pytest.param(_fields(kind="nope"), id="unknown-kind"),
        pytest.param(_fields(kind=None), id="missing-kind"),
        pytest.param(_fields(session_id=None), id="missing-session-id"),
        pytest.param(_fields(turn_id=None), id="missing-turn-id"),
        pytest.param(_fields(at_ms=None), id="missing-kind-specific-field"),
        pytest.param(_fields(surprise=1), id="extra-field"),
        pytest.param(_fields(turn_id=-1), id="negative-turn-id"),
        pytest.param(_fields(seq=-1), id="negative-seq"),
        pytest.param(_fields(session_id=""), id="empty-session-id"),
        pytest.param(_fields(session_id="x" * 65), id="overlong-session-id"),
        pytest.param(_fields(turn_id="three"), id="non-numeric-turn-id"),
        pytest.param({**_fields(), FIELD_AUDIO: b"\x00"}, id="audio-on-a-kind-without-audio"),
    ],
)
def test_decode_rejects(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(DecodeError):
        decode(fields)


@pytest.mark.parametrize(
    "message",
    [
        AudioFrame(session_id="s", turn_id=0, seq=0, audio=b"\x01"),
        AudioChunk(session_id="s", turn_id=0, seq=0, phrase_seq=0, sample_rate=16_000, audio=b"\x01"),
    ],
    ids=lambda m: m.kind,
)
def test_audio_kind_without_audio_field_is_rejected(message: Message) -> None:
    fields = encode(message)
    del fields[FIELD_AUDIO]
    with pytest.raises(DecodeError):
        decode(fields)


def test_decode_error_is_a_value_error_and_hides_the_payload() -> None:
    with pytest.raises(ValueError, match="malformed bus message") as info:
        decode(_fields(session_id="secret-session", turn_id=-5))
    assert isinstance(info.value, DecodeError)
    assert "secret-session" not in str(info.value)


def test_deeply_nested_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode({FIELD_DATA: b"[" * 100_000})


@pytest.mark.parametrize("message", ALL_KINDS, ids=lambda m: m.kind)
def test_messages_are_frozen(message: Message) -> None:
    with pytest.raises(ValidationError):
        message.turn_id = 99  # type: ignore[misc]
    assert message.turn_id == 3


def test_audio_is_frozen_too() -> None:
    frame = AudioFrame(session_id="s", turn_id=0, seq=0, audio=b"a")
    with pytest.raises(ValidationError):
        frame.audio = b"b"  # type: ignore[misc]
    assert frame.audio == b"a"


def test_sent_at_defaults_to_now() -> None:
    message = Cancel(session_id="s", turn_id=1, seq=1)
    assert message.sent_at > 1_600_000_000


def test_broadcast_round_trip() -> None:
    cancel = Cancel(session_id="s-9", turn_id=12, seq=12, sent_at=5.5)
    payload = encode_broadcast(cancel)
    assert json.loads(payload)["kind"] == "cancel"
    assert decode_broadcast(payload) == cancel


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[]", id="json-array"),
        pytest.param(b'{"kind": "cancel"}', id="missing-envelope"),
        pytest.param(
            json.dumps({"kind": "error", **ENVELOPE, "code": "x", "message": "y"}).encode(),
            id="other-kind",
        ),
        pytest.param(json.dumps({"kind": "cancel", **ENVELOPE, "turn_id": -1}).encode(), id="negative-turn"),
        pytest.param(json.dumps({"kind": "cancel", **ENVELOPE, "extra": True}).encode(), id="extra-field"),
    ],
)
def test_decode_broadcast_rejects(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_broadcast(payload)
