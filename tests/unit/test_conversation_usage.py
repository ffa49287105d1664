"""Which replies a session is charged for: those released to the client, never a discarded speculation."""

from __future__ import annotations

import pytest

from services.gateway.conversation import Conversation
from tests.unit.conversation_support import Clock, FakeEffects, ask, play_reply

pytestmark = pytest.mark.unit


async def test_a_plain_reply_is_charged_to_its_turn_also_after_the_turn_moved_on(
    convo: Conversation, clock: Clock
) -> None:
    await ask(convo, 10, "Tell me about the moon.")
    assert convo.released_turn(1) == 1
    play_reply(convo, clock, ["The moon is bright."], [3.0])
    clock.now += 0.5
    await convo.client_cancel()  # its work is cancelled; its usage report comes afterwards
    assert convo.current_reply(1) is None and convo.released_turn(1) == 1


async def test_a_discarded_speculation_is_never_charged(convo: Conversation, effects: FakeEffects) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, "What is the capital of", pause_ms=1200, speech_ended_at=1.0)
    assert convo.released_turn(1) is None, "held back: not charged until released"
    await convo.resumed(10, pause_ms=1200)
    await convo.transcript(10, "What is the capital of France?", speech_ended_at=2.0)
    assert effects.requests == [(1, "What is the capital of"), (2, "What is the capital of France?")]
    assert convo.released_turn(1) is None, "the discarded speculation's work"
    assert convo.released_turn(2) == 1, "the reply the client gets, under its turn"


async def test_a_confirmed_speculation_is_charged_once_released(convo: Conversation) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, "Hi.", pause_ms=900, speech_ended_at=1.0)
    assert convo.released_turn(1) is None
    await convo.transcript(10, "Hi.", 1.0)
    assert convo.released_turn(1) == 1


async def test_a_final_that_differs_charges_only_the_new_reply(convo: Conversation) -> None:
    await convo.speech_started(10)
    await convo.speculative(10, "What is the capital of friends?", pause_ms=1800, speech_ended_at=1.0)
    await convo.transcript(10, "What is the capital of France?", speech_ended_at=1.0)
    assert convo.released_turn(1) is None and convo.released_turn(2) == 1
