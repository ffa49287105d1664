"""Resuming a session, the logic without I/O: the resume key's shape and secrecy, where a client offers it,
what a dropped connection leaves in the history, and a resumed session's usage read back from Redis."""

from __future__ import annotations

import json

import pytest

from services.gateway.continuity import _load_usage
from services.gateway.conversation import Conversation
from services.gateway.resume import ResumeKey, offered_resume
from services.gateway.usage import SessionUsage
from shared.auth import redact
from tests.unit.conversation_support import Clock, FakeEffects, ask, play_reply, reply_playing

pytestmark = pytest.mark.unit


def test_a_resume_key_parses_back_and_nothing_else_does() -> None:
    key = ResumeKey.new("0123456789abcdef0123456789abcdef")
    assert ResumeKey.parse(str(key)) == key
    bad = [
        "", "nonsense", key.session_id, f"{key.session_id}.", f"{key.session_id}.{key.secret}.x",
        f"{key.session_id.upper()}.{key.secret}", f"{key.session_id}.{key.secret[:-1]}",
        f"{key.session_id}.{key.secret[:-1]}=", f"../{key.session_id}.{key.secret}",
    ]  # fmt: skip
    assert [text for text in bad if ResumeKey.parse(text) is not None] == []


def test_the_secret_stays_out_of_reprs_digests_and_logs() -> None:
    key = ResumeKey.new("0123456789abcdef0123456789abcdef")
    assert key.secret not in repr(key) and key.secret not in key.digest
    assert ResumeKey.new(key.session_id).digest != key.digest
    for line in (
        f"GET /v1/realtime?resume={key} HTTP/1.1",
        f"GET /v1/realtime?output_sample_rate=24000&resume={key}",
        f"Sec-WebSocket-Protocol: voxmesh, resume.{key}",
    ):
        assert key.secret not in redact(line), line


def test_the_subprotocol_wins_over_the_query_parameter() -> None:
    assert offered_resume(["voxmesh", "token.t", "resume.a.b"], "c.d") == "a.b"
    assert offered_resume(["voxmesh"], "c.d") == "c.d"
    assert offered_resume(["voxmesh"], "") is None and offered_resume([], None) is None


async def test_a_drop_stops_the_reply_and_keeps_what_was_heard(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "What is the capital of France?")
    play_reply(convo, clock, ["Paris."], [1.0])
    clock.now += 5
    await reply_playing(convo, clock)  # a 3 s reply, half a second into it
    opened = effects.counter
    await convo.park()
    assert effects.counter == opened + 1, "its work is cancelled"
    assert [(e.role, e.text, e.interrupted) for e in effects.history] == [
        ("user", "What is the capital of France?", False),
        ("assistant", "Paris.", False),
        ("user", "Tell me about the moon.", False),
        ("assistant", "", True),  # cut half a second in: not a word of it counted as heard
    ]


async def test_a_drop_before_any_reply_keeps_the_question(convo: Conversation, effects: FakeEffects) -> None:
    await convo.speech_started(10)
    await convo.speech_started(50)
    await convo.transcript(10, "What is the capital", 0.0)  # overtaken: waiting to be merged
    await convo.park()
    assert [(e.role, e.text) for e in effects.history] == [("user", "What is the capital")]


def test_a_resumed_sessions_usage_is_read_back() -> None:
    usage = SessionUsage(None, "s", token_budget=100)  # type: ignore[arg-type]  # no Redis needed here
    totals = {
        b"llm_input_tokens": b"90", b"llm_output_tokens": b"20", b"tool_calls": b"1", b"tool_failures": b"0",
        b"audio_in_seconds": b"12.5", b"audio_out_seconds": b"4.25", b"replies": b"2",
    }  # fmt: skip
    record = {
        "engine": "gemini", "model": "m", "input_tokens": 45, "output_tokens": 10, "estimated": False,
        "tool_calls": 0, "tool_failures": 0, "economy": False, "audio_in_seconds": 6.0,
        "audio_out_seconds": 2.0,
    }  # fmt: skip
    turns = {
        b"2": json.dumps({**record, "turn_id": 2}).encode(),
        b"1": json.dumps({**record, "turn_id": 1}).encode(),
    }
    turns[b"3"] = b"{not json"
    _load_usage(usage, totals, turns)
    assert usage.totals() == {
        "llm_input_tokens": 90, "llm_output_tokens": 20, "tool_calls": 1, "tool_failures": 0,
        "audio_in_seconds": 12.5, "audio_out_seconds": 4.25, "replies": 2,
    }  # fmt: skip
    assert list(usage.turns) == [1, 2] and usage.turn_audio[2]["audio_out_seconds"] == 2.0
    assert usage.budget_reached, "110 tokens of a budget of 100"
