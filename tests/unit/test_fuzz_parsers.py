"""Fuzzing what parses untrusted input, under hypothesis: the gateway's client events (text frames) and the
bus decoder (stream entries and cancel broadcasts). Any input gives a parsed value or the parser's own
error (which the caller turns into an `error` event or a dead letter), never another exception.

`make test` runs a smoke-sized run (the `smoke` profile, tests/conftest.py); the full run, 100,000 inputs
per test, is `pytest tests/unit/test_fuzz_parsers.py --hypothesis-profile=fuzz` (docs/security.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.events import ClientEventError, parse_client_event
from shared.schema import FIELD_AUDIO, FIELD_DATA, DecodeError, decode, decode_broadcast, decode_prefill

pytestmark = pytest.mark.unit

CLIENT_ERROR_CODES = {"bad_json", "unknown_event", "bad_event", "invalid_session_update"}
CLIENT_TYPES = ["ping", "response.cancel", "session.close", "audio.played", "session.update", "session.usage"]
BUS_KINDS = [
    "session.opened", "audio.frame", "session.closed", "speech.started", "speech.sustained",
    "transcript.partial", "transcript.speculative", "speech.resumed", "transcript.final",
    "reply.requested", "reply.phrase", "reply.done", "audio.chunk", "phrase.audio_done", "cancel", "error",
    "reply.usage",
]  # fmt: skip
BUS_FIELDS = [
    "session_id", "turn_id", "seq", "sent_at", "sample_rate", "at_ms", "utterance", "text", "pause_ms",
    "speech_ended_at", "output_sample_rate", "instructions", "phrase_count", "phrase_seq", "chunk_count",
    "code", "message", "audio", "economy",
]  # fmt: skip

_text = st.text(st.characters(codec="utf-8"), max_size=40)
_numbers = st.one_of(st.integers(), st.integers(-3, 70_000), st.floats())
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _text)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _objects(kind_key: str, kinds: list[str], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects shaped like real messages: a known (or near) kind, known and unknown fields."""
    return st.builds(
        lambda kind, known, extra: {kind_key: kind, **known, **extra},
        st.sampled_from(kinds) | _text,
        st.dictionaries(st.sampled_from(fields), _json | _numbers, max_size=len(fields)),
        st.dictionaries(_text, _json, max_size=2),
    )


def _deep(opening: str, closing: str) -> st.SearchStrategy[str]:
    return st.integers(1, 50_000).map(lambda n: opening * n + closing * n)


_client_frames = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=300),
    st.text(st.sampled_from('{}[]":,.-+0123456789eEtrufalsnNI\\ '), max_size=80),
    _json.map(json.dumps),
    _objects(
        "type", CLIENT_TYPES, ["turn_id", "played_ms", "session", "output_sample_rate", "instructions"]
    ).map(json.dumps),
    st.builds(
        lambda options: json.dumps({"type": "session.update", "session": options}),
        st.dictionaries(st.sampled_from(["output_sample_rate", "instructions", "economy"]) | _text, _json),
    ),
    _deep("[", "]"),
    _deep('{"a":', "}").map(lambda text: text.replace("}", "1}", 1)),
)


@given(_client_frames)
def test_any_text_frame_parses_or_is_refused_with_an_error_code(text: str) -> None:
    try:
        event = parse_client_event(text)
    except ClientEventError as exc:
        assert exc.code in CLIENT_ERROR_CODES
        assert 0 < len(exc.message) <= 400  # short, whatever the input
    else:
        assert event.type in CLIENT_TYPES


_bus_payloads = st.one_of(
    st.binary(max_size=300),
    st.text(st.characters(codec="utf-8"), max_size=200).map(str.encode),
    _json.map(lambda value: json.dumps(value).encode()),
    _objects("kind", BUS_KINDS, BUS_FIELDS).map(lambda value: json.dumps(value).encode()),
    _deep("[", "]").map(str.encode),
)
_bus_entries = st.builds(
    lambda data, audio, extra: {**({FIELD_DATA: data} if data is not None else {}), **audio, **extra},
    st.none() | _bus_payloads,
    st.dictionaries(st.just(FIELD_AUDIO), st.binary(max_size=64), max_size=1),
    st.dictionaries(st.binary(max_size=8), st.binary(max_size=16), max_size=2),
)


@given(_bus_entries)
def test_any_stream_entry_decodes_or_is_a_decode_error(fields: dict[bytes, bytes]) -> None:
    try:
        message = decode(fields)
    except DecodeError:
        return
    assert message.kind in BUS_KINDS


@given(_bus_payloads)
def test_any_cancel_broadcast_decodes_or_is_a_decode_error(payload: bytes) -> None:
    try:
        cancel = decode_broadcast(payload)
    except DecodeError:
        return
    assert cancel.kind == "cancel"


@given(_bus_payloads)
def test_any_prefill_hint_decodes_or_is_a_decode_error(payload: bytes) -> None:
    try:
        hint = decode_prefill(payload)
    except DecodeError:
        return
    assert hint.kind == "reply.prefill"
