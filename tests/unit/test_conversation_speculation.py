"""Speculative replies on fakes: started on the text at a pause, held back, released or discarded whole."""

from __future__ import annotations

import pytest

from services.gateway.conversation import Conversation
from tests.unit.conversation_support import Clock, FakeEffects, ask, play_reply

pytestmark = pytest.mark.unit


def client_events(effects: FakeEffects) -> list[tuple[str, int, str]]:
    return [(e["type"], e["turn_id"], e.get("text", "")) for e in effects.events]


async def test_a_confirmed_speculation_is_released_as_the_turns_reply(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, " What is the capital of France?", pause_ms=1800, speech_ended_at=1.0)

    assert effects.requests == [(1, "What is the capital of France?")], "the reply starts at the pause"
    assert client_events(effects) == [("speech.started", 1, "")], "nothing of it reaches the client yet"
    reply = convo.reply
    assert reply is not None and reply.speculation is not None
    assert convo.current_reply(1) is reply, "its output is accepted (and held by the session)"

    await convo.transcript(10, "What is the capital of France?", speech_ended_at=1.0)

    assert effects.requests == [(1, "What is the capital of France?")], "no second request"
    assert client_events(effects)[-1] == ("transcript.final", 1, "What is the capital of France?")
    assert effects.released == [1] and reply.speculation is None


async def test_speech_resuming_discards_the_speculation_and_the_whole_utterance_is_answered(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, "What is the capital of", pause_ms=1200, speech_ended_at=1.0)
    await convo.resumed(10, pause_ms=1200)

    assert convo.reply is None and convo.work == 2, "its work is cancelled under a new work number"
    assert convo.current_reply(1) is None, "late output of the speculation is dropped"
    await convo.transcript(10, "What is the capital of France?", speech_ended_at=2.0)

    assert effects.requests == [(1, "What is the capital of"), (2, "What is the capital of France?")]
    assert client_events(effects) == [
        ("speech.started", 1, ""),
        ("transcript.final", 1, "What is the capital of France?"),
    ], "the client sees one turn, numbered as it started, and never the speculative text"
    assert effects.released == [] and effects.history == []


async def test_a_final_that_differs_from_the_speculation_replaces_it(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, "What is the capital of friends?", pause_ms=1800, speech_ended_at=1.0)
    await convo.transcript(10, "What is the capital of France?", speech_ended_at=1.0)

    assert effects.requests == [(1, "What is the capital of friends?"), (2, "What is the capital of France?")]
    assert effects.released == []
    reply = convo.reply
    assert reply is not None and reply.speculation is None and (reply.turn_id, reply.work_id) == (1, 2)


async def test_a_speculation_for_a_pause_already_left_is_ignored(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.resumed(10, pause_ms=1200)  # the bus delivered the resume first
    await convo.speculative(10, "What is the capital of", pause_ms=1200, speech_ended_at=1.0)
    assert effects.requests == []
    await convo.speculative(10, "What is the capital of France?", pause_ms=2100, speech_ended_at=1.0)
    assert effects.requests == [(1, "What is the capital of France?")], "a later pause may speculate"


async def test_a_speculation_after_its_final_or_for_an_older_utterance_is_ignored(
    convo: Conversation, effects: FakeEffects
) -> None:
    await ask(convo, 10, "Hello there.")
    await convo.speculative(10, "Hello there.", pause_ms=900, speech_ended_at=1.0)
    await convo.speech_started(80)
    await convo.speculative(10, "Hello there.", pause_ms=900, speech_ended_at=1.0)
    assert effects.requests == [(1, "Hello there.")]


async def test_no_speculation_over_a_playing_reply_until_the_speech_is_sustained(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "Tell me about the moon.")
    play_reply(convo, clock, ["The moon is bright."], [3.0])
    clock.now += 0.5
    await convo.speech_started(100)  # maybe a cough
    await convo.speculative(100, "Hmm.", pause_ms=5000, speech_ended_at=1.0)
    await convo.speculative(100, "Wait.", pause_ms=5000, speech_ended_at=1.0)
    assert effects.requests == [(1, "Tell me about the moon.")]
    assert "audio.clear" not in effects.types(), "a speculation never cuts a playing reply"


async def test_words_carried_into_a_discarded_speculation_are_answered_with_the_final(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.speech_started(50)  # the user went on before the first transcript came
    await convo.transcript(10, "What is the capital", 0.0)  # overtaken: held back
    await convo.speculative(50, "of Fr", pause_ms=3000, speech_ended_at=1.0)
    assert effects.requests == [(2, "What is the capital of Fr")]
    await convo.resumed(50, pause_ms=3000)
    await convo.transcript(50, "of France?", 0.0)
    assert effects.requests[-1] == (3, "What is the capital of France?"), "the held words are not lost"


async def test_a_new_utterance_voids_an_unconfirmed_speculation(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, "What is the capital", pause_ms=1200, speech_ended_at=1.0)
    await convo.speech_started(60)  # its end came and a new utterance began before the final arrived
    await convo.transcript(10, "What is the capital", 0.0)
    await convo.transcript(60, "of France?", 0.0)

    assert effects.requests == [(1, "What is the capital"), (2, "What is the capital of France?")]
    assert effects.released == []
    assert effects.history == [], "the discarded speculation left nothing in the history"


async def test_the_history_holds_the_confirmed_speculative_exchange_once(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, "Hi.", pause_ms=900, speech_ended_at=1.0)
    await convo.transcript(10, "Hi.", 1.0)
    play_reply(convo, clock, ["Hello!"], [1.0])
    clock.now += 5
    await convo.speech_started(90)
    await convo.speculative(90, "How are you?", pause_ms=3000, speech_ended_at=1.0)
    await convo.resumed(90, pause_ms=3000)
    await convo.transcript(90, "How are you today?", 1.0)

    assert [(e.role, e.text) for e in effects.history] == [("user", "Hi."), ("assistant", "Hello!")]
    assert effects.requests[-1] == (3, "How are you today?")
