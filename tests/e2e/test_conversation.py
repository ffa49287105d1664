"""A conversation of several questions in one session, each spoken once the previous reply has played,
through the real mesh with the talk client (clients.talk): each is heard and answered exactly once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from clients.talk import ConversationResult, converse
from shared.audio import write_wav
from tests.e2e.conftest import RunningStack
from tests.speech import silence, speech_wav, synthesize_speech

pytestmark = pytest.mark.e2e

# Each question with the words its transcript must hold (never the LLM's exact wording).
QUESTIONS = [
    ("What is the capital of France?", ("capital", "france")),
    ("How many days are in a week?", ("day", "week")),
    ("What colour is the sky?", ("sky",)),
]
RATE = 22050


def _check_answered_once(conversation: ConversationResult) -> None:
    """One audio.start and one audio.end per answering turn, in order; no audio for any other turn."""
    answers = [result.turn_id for result in conversation.turns]
    trace = conversation.trace
    assert [e.turn_id for e in trace if e.type == "audio.start"] == answers, trace
    assert [e.turn_id for e in trace if e.type == "audio.end"] == answers, trace
    assert not [e for e in trace if e.type == "audio" and e.turn_id is None], "reply audio of a stale turn"
    assert not [e for e in trace if e.type == "audio.clear"], "nothing was talked over"


async def test_three_questions_in_a_row_each_answered_once(stack: RunningStack, tmp_path: Path) -> None:
    wavs = [speech_wav(tmp_path / f"q{i}.wav", text) for i, (text, _) in enumerate(QUESTIONS)]
    async with asyncio.timeout(400):
        conversation = await converse(wavs, url=stack.url, timeout_s=120)

    assert len(conversation.turns) == len(QUESTIONS)
    for result, (question, keywords) in zip(conversation.turns, QUESTIONS, strict=True):
        heard = result.transcript.lower()
        assert all(word in heard for word in keywords), (question, result.transcript)
        assert result.reply_text and result.reply_audio, question
        assert not result.interrupted and result.heard_text == result.reply_text
        assert result.first_audio_ms is not None and 0 < result.first_audio_ms < 60_000
    _check_answered_once(conversation)
    # Each question went out only after the previous reply had played out (reported as played in full).
    played = [e for e in conversation.trace if e.type == "audio.played"]
    starts = [e.at for e in conversation.trace if e.type == "mic.start"]
    assert [e.turn_id for e in played] == [r.turn_id for r in conversation.turns]
    for report, next_start in zip(played, starts[1:], strict=False):
        assert report.at <= next_start


async def test_a_question_with_a_pause_inside_is_answered_once(
    stack: RunningStack, redis_url: str, tmp_path: Path
) -> None:
    # "What is the capital" ... 600 ms ... "of France?": may arrive as two turns; one answer, to both.
    pcm = (
        silence(300, RATE)
        + synthesize_speech("What is the capital", RATE)
        + silence(600, RATE)
        + synthesize_speech("of France?", RATE)
    )
    write_wav(tmp_path / "pause.wav", pcm, RATE)
    # A follow-up question, because the gateway writes an exchange to the history when the next begins.
    follow_up = speech_wav(tmp_path / "follow_up.wav", QUESTIONS[1][0])
    async with asyncio.timeout(300):
        conversation = await converse([tmp_path / "pause.wav", follow_up], url=stack.url, timeout_s=120)
        redis = Redis.from_url(redis_url)
        try:
            raw = await redis.lrange(f"vm:history:{{{conversation.session_id}}}", 0, -1)
        finally:
            await redis.aclose()

    result = conversation.turns[0]
    assert result.turn_id is not None and result.turn_id == max(result.turn_ids)  # the later turn
    assert "capital" in result.transcript.lower() and "france" in result.transcript.lower()
    assert result.reply_text and result.reply_audio and not result.interrupted
    _check_answered_once(conversation)  # one completed reply for the question with the pause

    # The request that got answered covered both parts; the unheard reply to the first part left no trace.
    history = [json.loads(item) for item in raw]
    asked = [e["text"] for e in history if e["role"] == "user" and e["turn_id"] == result.turn_id]
    assert len(asked) == 1 and "capital" in asked[0].lower() and "france" in asked[0].lower(), history
    earlier = [e for e in history if e["turn_id"] < result.turn_id]
    assert not earlier, history
