"""The gateway's turn logic on fakes, as scripted timelines: utterances, replies, barge-ins, races."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.conversation import Conversation, is_backchannel
from tests.unit.conversation_support import Clock, FakeEffects, ask, play_reply, reply_playing

pytestmark = pytest.mark.unit


async def test_each_utterance_gets_its_own_turn_and_is_answered_in_it(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "What is the capital of France?")
    play_reply(convo, clock, ["Paris."], [1.0])
    clock.now += 5  # played out
    await ask(convo, 200, "How many days are in a week?")
    assert effects.requests == [(1, "What is the capital of France?"), (2, "How many days are in a week?")]
    assert [(e.role, e.text, e.interrupted) for e in effects.history] == [
        ("user", "What is the capital of France?", False),
        ("assistant", "Paris.", False),
    ]
    assert "audio.clear" not in effects.types()


async def test_a_transcript_arriving_after_the_next_utterance_started_is_merged_not_answered_alone(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.speech_started(50)  # the user went on before the first transcript came
    await convo.transcript(10, "What is the capital", 0.0)
    assert effects.requests == [], "an overtaken transcript never gets a reply of its own"
    await convo.transcript(50, "of France?", 0.0)
    assert effects.requests == [(2, "What is the capital of France?")]
    finals = [e for e in effects.events if e["type"] == "transcript.final"]
    assert [(e["turn_id"], e["text"]) for e in finals] == [(1, "What is the capital"), (2, "of France?")]


async def test_a_pause_before_any_reply_audio_merges_both_parts_into_one_question(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "What is the capital")
    clock.now += 0.6  # reply being generated, nothing played yet
    await ask(convo, 60, "of France?")
    assert effects.requests == [(1, "What is the capital"), (2, "What is the capital of France?")]
    assert effects.history == [], "a reply nobody heard leaves no trace in the history"


async def test_barge_in_keeps_only_the_heard_part_marked_interrupted(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "Tell me about the moon.")
    play_reply(convo, clock, ["The moon is bright.", "It orbits the Earth every month."], [1.0, 2.0])
    clock.now += 0.3
    await convo.speech_started(100)  # audible reply: held back until sustained
    assert effects.types().count("speech.started") == 1
    await convo.speech_sustained(100)
    assert effects.types()[-2:] == ["speech.started", "audio.clear"]
    await convo.audio_played(1, 2000.0)  # all of phrase one, half of phrase two
    truncated = effects.events[-1]
    assert truncated["type"] == "reply.truncated" and truncated["turn_id"] == 1
    assert truncated["text"] == "The moon is bright. It orbits the"
    await convo.transcript(100, "How many days are in a week?", 0.0)
    assert effects.requests[-1] == (2, "How many days are in a week?")
    assistant = [e for e in effects.history if e.role == "assistant"]
    assert [(e.text, e.interrupted, e.turn_id) for e in assistant] == [
        ("The moon is bright. It orbits the", True, 1)
    ]


async def test_without_a_client_report_the_heard_part_is_estimated_from_send_times(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "Tell me about the moon.")
    play_reply(convo, clock, ["One two three four.", "Five six seven eight."], [1.0, 1.0])
    clock.now += 1.5
    await convo.speech_started(100)
    await convo.speech_sustained(100)
    clock.now += 5  # no audio.played ever comes
    await convo.transcript(100, "Stop.", 0.0)
    assistant = [e for e in effects.history if e.role == "assistant"]
    assert [(e.text, e.interrupted) for e in assistant] == [("One two three four. Five six", True)]


async def test_a_short_noise_does_not_cut_a_playing_reply(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await reply_playing(convo, clock)
    await convo.speech_started(100)  # a cough: never sustained
    await convo.transcript(100, "", 0.0)
    assert convo.turn == 1
    assert "audio.clear" not in effects.types()
    assert effects.requests == [(1, "Tell me about the moon.")]


async def test_a_short_word_during_a_reply_interrupts_once_transcribed(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await reply_playing(convo, clock)
    await convo.speech_started(100)
    await convo.transcript(100, "No.", 0.0)
    assert "audio.clear" in effects.types()
    assert effects.requests[-1] == (2, "No.")


async def test_noise_that_cut_an_unheard_reply_gets_the_question_answered_again(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "What is the capital of France?")
    await convo.speech_started(40)  # a cough while the reply is being generated (not audible yet)
    await convo.transcript(40, "", 0.0)
    assert effects.requests == [(1, "What is the capital of France?"), (2, "What is the capital of France?")]


async def test_turn_never_goes_backwards_when_speech_and_client_cancel_race(
    convo: Conversation, effects: FakeEffects
) -> None:
    effects.open_delays = [0.05, 0.0]  # the first INCR answers last
    await asyncio.gather(convo.speech_started(10), convo.client_cancel())
    assert convo.turn == 2
    seen: list[int] = []
    for _ in range(20):
        await asyncio.gather(convo.client_cancel(), convo.speech_started(1000 + len(seen)))
        seen.append(convo.turn)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


async def test_output_of_a_stale_turn_has_no_reply_to_go_to(convo: Conversation, clock: Clock) -> None:
    await ask(convo, 10, "Tell me about the moon.")
    assert convo.current_reply(1) is not None
    await convo.client_cancel()
    assert convo.current_reply(1) is None
    assert convo.current_reply(2) is None, "no reply was requested for the cancel's turn"


async def test_a_repeated_speech_start_after_asr_failover_opens_no_second_turn(
    convo: Conversation, effects: FakeEffects
) -> None:
    await convo.speech_started(10)
    await convo.speech_started(10)
    await convo.speech_started(5)
    assert convo.turn == 1 and effects.counter == 1


async def test_client_cancel_keeps_the_question_in_the_history(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await ask(convo, 10, "What is the capital of France?")
    await convo.client_cancel()
    await ask(convo, 80, "How many days are in a week?")
    assert effects.requests[-1] == (3, "How many days are in a week?")
    assert [(e.role, e.text, e.interrupted) for e in effects.history] == [
        ("user", "What is the capital of France?", False),
        ("assistant", "", True),
    ]


async def test_a_backchannel_during_a_reply_does_not_interrupt(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await reply_playing(convo, clock)
    await convo.speech_started(100)
    await convo.transcript(100, "Mm-hmm.", 0.0)
    assert convo.turn == 1 and "audio.clear" not in effects.types()


@pytest.mark.parametrize(
    "text", ["Hmm.", "Hmmm...", "Mm-hmm.", "mhm", "Uh-huh.", "Uh.", "Um,", "Ah!", "Oh.", "hm hm"]
)
def test_listening_noises_are_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["No.", "Stop.", "Hmm, no.", "Oh wait.", "Huh? What?", "", "Ahead."])
def test_words_are_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


async def test_partials_go_to_the_client_for_the_newest_open_utterance_only(
    convo: Conversation, effects: FakeEffects, clock: Clock
) -> None:
    await convo.speech_started(10)
    await convo.partial(10, "What is the")
    await convo.partial(3, "an older utterance")
    partials = [e for e in effects.events if e["type"] == "transcript.partial"]
    assert partials == [{"type": "transcript.partial", "turn_id": 1, "text": "What is the"}]
    await convo.transcript(10, "What is the capital of France?", 0.0)
    play_reply(convo, clock, ["Paris."], [2.0])
    await convo.speech_started(50)  # held back while the reply plays: its turn is not open yet
    await convo.partial(50, "Mm")
    assert [e for e in effects.events if e["type"] == "transcript.partial"] == partials
