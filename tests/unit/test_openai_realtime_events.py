"""The OpenAI Realtime adapter's logic without I/O: native session events in, OpenAI server events out (each
parsed strictly with the `openai` SDK's own models), and the client events it accepts or refuses."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.openai_realtime.client_events import (
    AudioAppend,
    ProtocolError,
    SessionUpdate,
    parse_client_event,
)
from services.gateway.openai_realtime.config import SessionConfig
from services.gateway.openai_realtime.translator import USAGE_WAIT_S, Translator
from services.gateway.usage import TurnUsage
from tests.openai_realtime_support import strict_event

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Harness:
    """A translator with a usage table and a clock the test controls; every event is strictly parsed."""

    def __init__(self) -> None:
        self.usage: dict[int, TurnUsage] = {}
        self.clock = _Clock()
        self.config = SessionConfig(session_id="s" * 32, model="gpt-realtime")
        self.translator = Translator(
            self.config, usage_of=self.usage.get, input_ms=lambda: 1234, clock=self.clock
        )
        self.events: list[Any] = []

    def feed(self, *natives: dict[str, Any] | bytes) -> list[Any]:
        out: list[Any] = []
        for native in natives:
            raw = (
                self.translator.audio(native) if isinstance(native, bytes) else self.translator.event(native)
            )
            out += [strict_event(json.dumps(event)) for event in raw]
        self.events += out
        return out

    def charge(self, turn: int, input_tokens: int = 30, output_tokens: int = 9) -> None:
        self.usage[turn] = TurnUsage(
            turn_id=turn, engine="llama", model="m", input_tokens=input_tokens, output_tokens=output_tokens,
            estimated=False, tool_calls=0, tool_failures=0, economy=False,
        )  # fmt: skip


def _types(events: list[Any]) -> list[str]:
    return [event.type for event in events]


def _spoken_turn(h: _Harness, turn: int = 1) -> list[Any]:
    return h.feed(
        {"type": "speech.started", "turn_id": turn},
        {"type": "transcript.partial", "turn_id": turn, "text": "What is"},
        {"type": "transcript.partial", "turn_id": turn, "text": "What is the capital"},
        {"type": "transcript.final", "turn_id": turn, "text": "What is the capital of France?"},
        {"type": "reply.text", "turn_id": turn, "seq": 0, "text": "Paris is"},
        {"type": "audio.start", "turn_id": turn, "sample_rate": 24000, "latency_ms": 500},
        b"\x01\x00" * 2400,
        {"type": "reply.text", "turn_id": turn, "seq": 1, "text": "the capital."},
        b"\x02\x00" * 2400,
    )


def test_a_spoken_turn_becomes_transcription_events_then_a_response_in_the_apis_order() -> None:
    h = _Harness()
    created = h.feed({"type": "session.started", "session_id": "x", "output_sample_rate": 24000})
    assert _types(created) == ["session.created"]
    events = _spoken_turn(h)
    assert _types(events)[:10] == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    deltas = "".join(e.delta for e in events if e.type == "conversation.item.input_audio_transcription.delta")
    assert deltas == "What is the capital of France?"
    user_item = events[0].item_id
    assert {e.item_id for e in events[1:9] if hasattr(e, "item_id")} == {user_item}
    audio = [e for e in events if e.type == "response.output_audio.delta"]
    assert b"".join(base64.b64decode(e.delta) for e in audio) == b"\x01\x00" * 2400 + b"\x02\x00" * 2400

    ended = h.feed({"type": "audio.end", "turn_id": 1})
    assert "response.done" not in _types(ended), "a done response waits for its usage"
    h.charge(1)
    done = h.feed({"type": "openai.usage", "turn_id": 1})
    assert _types(ended) + _types(done) == [
        "response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
        "response.output_item.done", "conversation.item.done", "response.done",
    ]  # fmt: skip
    response = done[0].response
    assert response.status == "completed" and response.usage.total_tokens == 39
    assert response.output[0].content[0].transcript == "Paris is the capital."
    assert ended[1].transcript == "Paris is the capital."


def test_speech_over_a_response_cancels_it_after_speech_started() -> None:
    h = _Harness()
    _spoken_turn(h)
    stale = {"type": "reply.text", "turn_id": 1, "seq": 2, "text": "Stale."}
    events = h.feed({"type": "speech.started", "turn_id": 2}, stale, b"\x03\x00" * 10)
    assert _types(events) == [
        "input_audio_buffer.speech_started", "response.content_part.done", "response.output_item.done",
        "conversation.item.done", "response.done",
    ]  # fmt: skip
    response = events[-1].response
    assert response.status == "cancelled" and response.status_details.reason == "turn_detected"
    assert response.output[0].status == "incomplete"
    assert h.translator.item_turn(response.output[0].id) == 1, "truncate can find the item's turn"


def test_a_failed_turn_gets_an_error_and_a_failed_response() -> None:
    h = _Harness()
    _spoken_turn(h)
    events = h.feed({"type": "error", "code": "turn_failed", "message": "the reply timed out", "turn_id": 1})
    assert _types(events)[0] == "error" and events[0].error.type == "server_error"
    assert events[-1].type == "response.done" and events[-1].response.status == "failed"
    assert h.feed({"type": "audio.end", "turn_id": 1}) == [], "nothing more for a failed response"


def test_a_client_side_function_call_is_an_output_item_of_the_response() -> None:
    h = _Harness()
    h.feed({"type": "openai.response", "turn_id": 1})
    events = h.feed(
        {"type": "openai.function_call", "turn_id": 1, "call_id": "call_1", "name": "get_weather",
         "arguments": '{"location": "Oslo"}'},
        {"type": "audio.end", "turn_id": 1},
    )  # fmt: skip
    h.charge(1)
    events += h.feed({"type": "openai.usage", "turn_id": 1})
    assert _types(events) == [
        "response.output_item.added", "conversation.item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "conversation.item.done",
        "response.done",
    ]  # fmt: skip
    assert events[3].name == "get_weather" and events[3].call_id == "call_1"
    assert [item.type for item in events[-1].response.output] == ["function_call"]


def test_a_response_whose_usage_never_comes_is_done_after_a_while_without_it() -> None:
    h = _Harness()
    _spoken_turn(h)
    h.feed({"type": "audio.end", "turn_id": 1})
    assert not h.translator.overdue()
    h.clock.now += USAGE_WAIT_S + 0.1
    assert h.translator.overdue()
    done = h.feed({"type": "openai.tick"})
    assert _types(done) == ["response.done"] and done[0].response.usage is None


def test_the_budget_is_reported_as_rate_limits() -> None:
    h = _Harness()
    h.translator = Translator(
        h.config, usage_of=h.usage.get, input_ms=lambda: 0, clock=h.clock,
        rate_limits=lambda: [{"name": "tokens", "limit": 100, "remaining": 61, "reset_seconds": 0.0}],
    )  # fmt: skip
    _spoken_turn(h)
    h.charge(1)
    events = h.feed({"type": "audio.end", "turn_id": 1})
    assert _types(events)[-2:] == ["response.done", "rate_limits.updated"]
    assert events[-1].rate_limits[0].remaining == 61


def test_a_text_only_response_has_output_text_and_no_audio() -> None:
    h = _Harness()
    h.feed({"type": "openai.response", "turn_id": 1, "output_modalities": ["text"]})
    events = h.feed(
        {"type": "reply.text", "turn_id": 1, "seq": 0, "text": "Paris."},
        {"type": "audio.start", "turn_id": 1, "sample_rate": 24000, "latency_ms": 1},
        b"\x01\x00" * 100,
        {"type": "audio.end", "turn_id": 1},
    )
    h.charge(1)
    events += h.feed({"type": "openai.usage", "turn_id": 1})
    assert _types(events) == [
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "conversation.item.done", "response.done",
    ]  # fmt: skip
    assert events[4].text == "Paris." and events[-1].response.output_modalities == ["text"]
    assert events[-1].response.output[0].content[0].type == "output_text"


def test_events_without_an_openai_counterpart_are_dropped() -> None:
    h = _Harness()
    for native in ({"type": "pong"}, {"type": "audio.clear", "turn_id": 1}, {"type": "session.usage"},
                   {"type": "reply.truncated", "turn_id": 1, "played_ms": 3, "text": ""}):  # fmt: skip
        assert h.feed(native) == []


# ---- client events


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("{", "invalid_json", None),
        ("[1]", "invalid_json", None),
        ('{"type": "session.close"}', "unknown_event", "type"),
        ('{"type": "input_audio_buffer.append", "audio": "AAA"}', "invalid_value", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": "AAAA"}', "invalid_value", "audio"),
        ('{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": -1}',
         "invalid_value", "audio_end_ms"),
        ('{"type": "session.update", "session": {"instructions": 5}}', "invalid_value",
         "session.instructions"),
    ],
)  # fmt: skip
def test_bad_client_events_are_refused_with_the_apis_error_codes(
    text: str, code: str, param: str | None
) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_client_event(text)
    assert refused.value.code == code and refused.value.param == param


def test_audio_is_base64_pcm() -> None:
    pcm = b"\x01\x02" * 10
    event = parse_client_event(
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    )
    assert isinstance(event, AudioAppend) and event.audio == pcm


def _update(session: dict[str, Any]) -> SessionUpdate:
    event = parse_client_event(json.dumps({"type": "session.update", "session": session}))
    assert isinstance(event, SessionUpdate)
    return event


def test_a_session_update_applies_entirely_or_not_at_all() -> None:
    config = SessionConfig(session_id="s", model="m")
    config.apply(_update({"instructions": "Be brief.", "audio": {"input": {"transcription": None}}}))
    assert config.instructions == "Be brief." and config.transcription is None
    for refused in (
        {"instructions": "Other.", "audio": {"output": {"format": {"type": "audio/pcma"}}}},
        {"instructions": "Other.", "output_modalities": ["audio", "text"]},
        {"instructions": "Other.", "audio": {"input": {"turn_detection": {"type": "server_vad",
                                                                          "interrupt_response": False}}}},
    ):  # fmt: skip
        with pytest.raises(ProtocolError):
            config.apply(_update(refused))
        assert config.instructions == "Be brief."
    config.apply(
        _update({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}})
    )
    assert config.turn_detection is not None and config.turn_detection["type"] == "semantic_vad"
    strict_event(json.dumps({"type": "session.updated", "event_id": "e", "session": config.as_dict()}))


def test_turn_detection_tells_the_asr_how_utterances_end_and_whether_turns_are_answered() -> None:
    config = SessionConfig(session_id="s", model="m")
    assert config.asr_options() == (True, None) and config.auto_response, "the ASR's own settings"
    config.apply(_turns({"type": "server_vad", "silence_duration_ms": 1800}))
    assert config.asr_options() == (True, 1800) and config.auto_response
    config.apply(_turns({"type": "server_vad"}))
    assert config.asr_options() == (True, 500), "the API's default silence"
    config.apply(_turns({"type": "server_vad", "create_response": False}))
    assert config.asr_options() == (True, 500) and not config.auto_response
    config.apply(_turns(None))
    assert config.asr_options() == (False, None) and not config.auto_response
    assert config.as_dict()["audio"]["input"]["turn_detection"] is None
    strict_event(json.dumps({"type": "session.updated", "event_id": "e", "session": config.as_dict()}))
    config.apply(_turns({"type": "semantic_vad"}))
    assert config.asr_options() == (True, None) and config.auto_response


def _turns(turn_detection: dict[str, Any] | None) -> SessionUpdate:
    return _update({"audio": {"input": {"turn_detection": turn_detection}}})


# ---- fuzzing the parser of untrusted input (as tests/unit/test_fuzz_parsers.py does for the native one)

_ERROR_CODES = {"invalid_json", "unknown_event", "invalid_value"}
_TYPES = [
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "conversation.item.truncate", "conversation.item.delete", "response.create",
    "response.cancel",
]  # fmt: skip
_FIELDS = ["session", "audio", "item", "item_id", "content_index", "audio_end_ms", "response", "event_id"]
_text = st.text(st.characters(codec="utf-8"), max_size=30)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _text)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_shaped = st.builds(
    lambda kind, known, extra: {"type": kind, **known, **extra},
    st.sampled_from(_TYPES) | _text,
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=4),
    st.dictionaries(_text, _json, max_size=2),
)
_sessions = st.builds(
    lambda session: {"type": "session.update", "session": session},
    st.fixed_dictionaries(
        {},
        optional={
            "instructions": _json, "output_modalities": st.sampled_from([["audio"], ["text"], []]) | _json,
            "audio": st.fixed_dictionaries({}, optional={
                "input": st.fixed_dictionaries({}, optional={
                    "format": st.sampled_from([{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}])
                    | _json,
                    "turn_detection": _json
                    | st.sampled_from([None, {"type": "server_vad"}, {"type": "semantic_vad"}]),
                    "transcription": _json,
                }),
                "output": st.fixed_dictionaries({}, optional={"voice": _json, "format": _json}),
            }),
            "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "name": _text}), max_size=3)
            | _json,
        },
    ),
)  # fmt: skip


@given(
    st.one_of(
        st.text(max_size=200), _json.map(json.dumps), _shaped.map(json.dumps), _sessions.map(json.dumps)
    )
)
def test_any_text_frame_parses_or_is_refused_with_an_api_error_code(text: str) -> None:
    try:
        event = parse_client_event(text)
    except ProtocolError as exc:
        assert exc.code in _ERROR_CODES, exc.code
        return
    if isinstance(event, SessionUpdate):
        config = SessionConfig(session_id="s", model="m")
        try:
            config.apply(event)
        except ProtocolError as exc:
            assert exc.code.startswith("unsupported_") or exc.code == "invalid_value", exc.code
        strict_event(json.dumps({"type": "session.updated", "event_id": "e", "session": config.as_dict()}))
