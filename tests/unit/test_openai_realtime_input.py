"""The OpenAI path's input buffer (services/gateway/openai_realtime/user_input.py) against a stand-in
session: what it tells the ASR, when a commit is refused, and what happens to the transcripts that come
back (the mesh behind it: tests/e2e/test_openai_realtime_input.py)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from services.gateway.openai_realtime.client_events import (
    ProtocolError,
    ResponseCreate,
    SessionUpdate,
    parse_client_event,
)
from services.gateway.openai_realtime.config import SessionConfig
from services.gateway.openai_realtime.session import OpenAIRealtimeSession
from services.gateway.openai_realtime.user_input import UserInput
from shared import keys
from shared.schema import (
    AsrOptions,
    InputBuffer,
    Message,
    SpeechStarted,
    TranscriptFinal,
    TranscriptSpeculative,
)

pytestmark = pytest.mark.unit

SECOND_24K = 48_000  # bytes of 24 kHz s16le audio in a second


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send_to_session(self, stream: str, message: Message) -> None:
        assert stream.startswith("vm:audio:")
        self.sent.append(message)


class FakeSession:
    """What `UserInput` uses of the session."""

    def __init__(self) -> None:
        self.session_id = "s1"
        self.turn = 3
        self.frame_seq = 10
        self.config = SessionConfig(session_id="s1", model="m")
        self.bus = FakeBus()
        self.events: list[dict[str, Any]] = []
        self.unanswered: list[str] = []
        self.responded: list[ResponseCreate] = []

    async def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def to_asr(self, message: Message) -> None:
        await self.bus.send_to_session(keys.audio_in(self.session_id), message)

    async def respond_now(self, event: ResponseCreate) -> None:
        self.responded.append(event)


class Native:
    """The native session's `_on_bus`: what reached it."""

    def __init__(self) -> None:
        self.got: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.got.append(message)


def _input() -> tuple[UserInput, FakeSession]:
    session = FakeSession()
    return UserInput(cast(OpenAIRealtimeSession, session)), session


def _turn_detection(session: FakeSession, value: dict[str, Any] | None) -> None:
    update = {"type": "session.update", "session": {"audio": {"input": {"turn_detection": value}}}}
    event = parse_client_event(json.dumps(update))
    assert isinstance(event, SessionUpdate)
    session.config.apply(event)


def _final(utterance: int, text: str = "What is the capital of France?") -> TranscriptFinal:
    return TranscriptFinal(
        session_id="s1", turn_id=3, seq=1, text=text, utterance=utterance, speech_ended_at=0.0
    )


async def test_the_asr_hears_of_turn_detection_only_when_it_changes() -> None:
    user_input, session = _input()
    await user_input.configure()
    assert session.bus.sent == [], "its own settings until the client sets something"
    _turn_detection(session, {"type": "server_vad", "silence_duration_ms": 900})
    await user_input.configure()
    await user_input.configure()
    _turn_detection(session, None)
    await user_input.configure()
    sent = [(m.turn_detection, m.max_silence_ms) for m in session.bus.sent if isinstance(m, AsrOptions)]
    assert sent == [(True, 900), (False, None)]
    assert [m.seq for m in session.bus.sent] == [10, 11], "numbered with the audio frames"
    assert session.frame_seq == 12


async def test_push_to_talk_commits_what_was_appended_and_a_response_waits_for_its_words() -> None:
    user_input, session = _input()
    _turn_detection(session, None)
    await user_input.configure()
    user_input.appended(SECOND_24K // 20)  # 50 ms
    with pytest.raises(ProtocolError) as refused:
        await user_input.commit()
    assert refused.value.code == "input_audio_buffer_commit_empty"
    user_input.appended(SECOND_24K)
    await user_input.commit()
    commit = session.bus.sent[-1]
    assert isinstance(commit, InputBuffer) and commit.action == "commit"
    create = ResponseCreate(type="response.create")
    assert user_input.defer(create), "the committed words are not known yet"

    native = Native()
    await user_input.relay(_final(commit.seq), native)
    assert native.got == [], "not answered by itself"
    assert session.unanswered == ["What is the capital of France?"]
    assert [e["type"] for e in session.events] == ["openai.committed"]
    assert session.responded == [create], "the held response.create, now"
    await user_input.relay(_final(commit.seq), native)
    assert len(session.events) == 1, "a transcript sent again (ASR takeover) commits nothing twice"
    assert not user_input.defer(create)

    with pytest.raises(ProtocolError):
        await user_input.commit()  # nothing appended since


async def test_with_detection_on_the_buffer_is_the_speech_being_heard() -> None:
    user_input, session = _input()
    with pytest.raises(ProtocolError):
        await user_input.commit()  # silence: nothing to commit
    native = Native()
    started = SpeechStarted(session_id="s1", turn_id=3, seq=1, at_ms=0, utterance=42)
    await user_input.relay(started, native)
    await user_input.commit()
    assert user_input.defer(ResponseCreate(type="response.create"))
    await user_input.relay(_final(42), native)
    assert [type(m) for m in native.got] == [SpeechStarted, TranscriptFinal], "answered as natively"
    assert len(session.responded) == 1, "and a response.create held for the commit comes after"
    await user_input.clear()
    assert isinstance(session.bus.sent[-1], InputBuffer) and session.bus.sent[-1].action == "clear"


async def test_with_create_response_false_a_turn_is_committed_and_no_reply_starts() -> None:
    user_input, session = _input()
    _turn_detection(session, {"type": "server_vad", "create_response": False})
    native = Native()
    speculative = TranscriptSpeculative(
        session_id="s1", turn_id=3, seq=1, text="What", utterance=7, speech_ended_at=0.0, pause_ms=10
    )
    await user_input.relay(speculative, native)
    await user_input.relay(_final(7, text=""), native)  # a cough: no item
    assert native.got == [] and session.events == []
    started = SpeechStarted(session_id="s1", turn_id=3, seq=1, at_ms=0, utterance=9)
    await user_input.relay(started, native)
    assert native.got == [started], "speech is heard (and cuts a response) as natively"
    session.turn = 5  # the user spoke again before the transcript came
    await user_input.relay(_final(9), native)
    assert [(e["type"], e["turn_id"]) for e in session.events] == [("openai.committed", 3)], "its own item"
    assert session.unanswered == ["What is the capital of France?"]
