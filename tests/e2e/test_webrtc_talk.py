"""`voxmesh talk --webrtc` through the real mesh (`voxmesh up`: real ASR, LLM and TTS on a real Redis):
a spoken question answered over WebRTC, and a barge-in by speech that stops the reply on the gateway's
track, keeps only what was played in the history, and gets the new question answered."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from clients.talk import converse
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.speech import speech_wav

pytestmark = pytest.mark.e2e

BARGE_IN_MS = 500


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """`voxmesh up` with room for a long story (the barge-in lands while it is still being written)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOXMESH_LLM_MAX_TOKENS", "800")
        running = start_stack(tmp_path_factory.mktemp("stack") / "services.log", redis_url)
    yield running
    stop_stack(running)
    assert running.process.returncode == 0, running.log_path.read_text()[-3000:]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def _history(redis_url: str, session_id: str) -> list[dict[str, object]]:
    redis = Redis.from_url(redis_url)
    try:
        raw = await redis.lrange(f"vm:history:{{{session_id}}}", 0, -1)
    finally:
        await redis.aclose()
    return [json.loads(item) for item in raw]


def test_voxmesh_talk_webrtc_answers_a_spoken_question(
    stack: RunningStack, question_wav: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reply.wav"
    env = {k: v for k, v in os.environ.items() if k != "VOXMESH_TOKEN"}
    command = [sys.executable, "-m", "services.cli", "talk", "--webrtc", "--url", stack.url, "--json"]
    done = subprocess.run(
        [*command, "--out", str(out), "--timeout", "120", str(question_wav)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "capital" in result["transcript"].lower() and "france" in result["transcript"].lower(), result
    assert result["reply_text"], result
    assert result["first_audio_ms"] is not None and result["first_audio_ms"] > 0, result
    assert out.stat().st_size > 48_000 * 2 * 0.3, "at least 0.3 s of reply audio came off the track"


async def test_speaking_over_a_reply_on_webrtc_stops_it_and_answers_the_new_question(
    stack: RunningStack, redis_url: str, tmp_path: Path
) -> None:
    long_wav = speech_wav(tmp_path / "long.wav", "Tell me a long story about the moon.")
    second_wav = speech_wav(tmp_path / "second.wav", "How many days are in a week?")
    async with asyncio.timeout(300):
        conversation = await converse(
            [long_wav, second_wav], url=stack.url, barge_in_ms=BARGE_IN_MS, timeout_s=120, webrtc=True
        )
        history = await _history(redis_url, conversation.session_id)

    first, second = conversation.turns
    trace = conversation.trace
    old, new = first.turn_id, second.turn_id
    assert old is not None and new is not None and new > old
    assert "moon" in first.transcript.lower(), first.transcript
    assert "week" in second.transcript.lower(), second.transcript

    # The old reply was cleared by the user's speech and never completed; the new one was answered.
    kinds = [(e.type, e.turn_id) for e in trace if e.direction == "in"]
    assert ("audio.clear", old) in kinds and ("audio.end", old) not in kinds
    assert first.interrupted
    assert second.reply_text and second.reply_audio and not second.interrupted

    # The gateway's track counted what was played: the history holds that much of the old reply.
    truncated = next(e for e in trace if e.type == "reply.truncated" and e.turn_id == old)
    played_ms = truncated.data["played_ms"]
    assert isinstance(played_ms, int | float) and played_ms > 0, truncated.data
    heard = str(truncated.data["text"])
    assert _words(first.reply_text)[: len(_words(heard))] == _words(heard), (heard, first.reply_text)
    assistant = [e for e in history if e["role"] == "assistant" and e["turn_id"] == old]
    assert len(assistant) == 1 and assistant[0]["text"] == heard and assistant[0]["interrupted"], history
