"""Talking over a long reply: the old reply stops everywhere, the history keeps what was heard, the new
question gets its answer. Driven by the talk client (clients.talk) through the real mesh."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from clients.talk import TraceEntry, converse
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.speech import speech_wav

pytestmark = pytest.mark.e2e

LONG_QUESTION = "Tell me a long story about the moon."
SECOND_QUESTION = "How many days are in a week?"
BARGE_IN_MS = 500  # after the first reply audio arrived: well inside a long reply
QUEUES = ("llm_requests", "tts_requests")


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The four services on each real Redis, with room for a story long enough that the LLM is still
    writing it when the user barges in, even on a fast machine (160 tokens can be done within 2 s)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOXMESH_LLM_MAX_TOKENS", "800")
        running = start_stack(tmp_path_factory.mktemp("stack") / "services.log", redis_url)
    yield running
    stop_stack(running)
    assert running.process.returncode == 0, running.log_path.read_text()[-3000:]


async def _scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, queue label) -> value, for every sample with a `queue` label on that /metrics."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return {
        (sample.name, sample.labels["queue"]): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if "queue" in sample.labels
    }


async def _work_stopped(stack: RunningStack) -> dict[str, tuple[float, float]]:
    """Per work queue: (jobs aborted, cancel-to-stop observations), from the LLM and TTS services."""
    llm, tts = await asyncio.gather(_scrape(stack.port + 2), _scrape(stack.port + 3))
    scraped = {"llm_requests": llm, "tts_requests": tts}
    return {
        queue: (
            scraped[queue].get(("voxmesh_jobs_aborted_total", queue), 0.0),
            scraped[queue].get(("voxmesh_cancel_stop_seconds_count", queue), 0.0),
        )
        for queue in QUEUES
    }


async def _history(redis_url: str, session_id: str) -> list[dict[str, object]]:
    redis = Redis.from_url(redis_url)
    try:
        raw = await redis.lrange(f"vm:history:{{{session_id}}}", 0, -1)
    finally:
        await redis.aclose()
    return [json.loads(item) for item in raw]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _index(trace: list[TraceEntry], kind: str, turn_id: int, direction: str = "in") -> int:
    """Position in the trace of the first `kind` event for `turn_id`."""
    for index, entry in enumerate(trace):
        if entry.type == kind and entry.turn_id == turn_id and entry.direction == direction:
            return index
    raise AssertionError(f"no {kind} for turn {turn_id}: {[(e.type, e.turn_id) for e in trace]}")


def _tts_had_old_work(trace: list[TraceEntry], old: int, clear_at: int) -> bool:
    """At the clear, a phrase of the old reply had gone to TTS and none of its audio had come back yet.

    (reply.text goes out when the LLM hands a phrase to TTS; reply audio comes in phrase order.)
    Otherwise TTS may well have been idle, waiting for the LLM's next phrase: nothing to abort.
    """
    before = list(enumerate(trace[:clear_at]))
    last_phrase = max((i for i, e in before if e.type == "reply.text" and e.turn_id == old), default=-1)
    last_audio = max((i for i, e in before if e.type == "audio" and e.turn_id == old), default=-1)
    return last_phrase > last_audio


async def test_speaking_over_a_long_reply_stops_it_and_answers_the_new_question(
    stack: RunningStack, redis_url: str, tmp_path: Path
) -> None:
    long_wav = speech_wav(tmp_path / "long.wav", LONG_QUESTION)
    second_wav = speech_wav(tmp_path / "second.wav", SECOND_QUESTION)
    async with asyncio.timeout(300):
        before = await _work_stopped(stack)
        conversation = await converse(
            [long_wav, second_wav], url=stack.url, barge_in_ms=BARGE_IN_MS, timeout_s=120
        )
        after = await _work_stopped(stack)
        history = await _history(redis_url, conversation.session_id)

    first, second = conversation.turns
    trace = conversation.trace
    old, new = first.turn_id, second.turn_id
    assert old is not None and new is not None and new > old
    assert "moon" in first.transcript.lower(), first.transcript
    assert "day" in second.transcript.lower() and "week" in second.transcript.lower(), second.transcript

    # The new turn is announced and the old reply is cleared; not one byte of it follows the clear.
    clear_at = _index(trace, "audio.clear", old)
    _index(trace, "speech.started", new)
    new_audio_at = _index(trace, "audio.start", new)
    assert not [e for e in trace[clear_at:new_audio_at] if e.type == "audio"], "old audio after audio.clear"
    assert first.interrupted and first.total_ms is None
    assert not [e for e in trace if e.type == "audio.end" and e.turn_id == old], "old reply completed"

    # The new question is answered with audio, once.
    assert second.reply_text and second.reply_audio and not second.interrupted
    assert [e.turn_id for e in trace if e.type == "audio.end"] == [new]

    # The client reported where playback stopped; the server answered with what was heard.
    played_at = _index(trace, "audio.played", old, direction="out")
    truncated_at = _index(trace, "reply.truncated", old)
    assert played_at < truncated_at
    heard = first.heard_text
    assert heard is not None and heard == trace[truncated_at].data["text"]
    assert _words(first.reply_text)[: len(_words(heard))] == _words(heard), (heard, first.reply_text)

    # LLM and TTS stopped their work on the old turn, and said how fast. The LLM is still writing the
    # story; TTS only has work to abort when a phrase was in its hands at that moment.
    busy = ["llm_requests"] + (["tts_requests"] if _tts_had_old_work(trace, old, clear_at) else [])
    for queue in busy:
        (aborted_before, stops_before), (aborted_after, stops_after) = before[queue], after[queue]
        assert aborted_after > aborted_before, f"{queue}: no job aborted ({before} -> {after})"
        assert stops_after > stops_before, f"{queue}: no cancel-to-stop observation ({before} -> {after})"

    # The history keeps only what was heard of the old reply, marked as interrupted.
    assistant = [e for e in history if e["role"] == "assistant" and e["turn_id"] == old]
    assert len(assistant) == 1, history
    assert assistant[0]["text"] == heard and assistant[0]["interrupted"] is True, history
    roles = [(e["role"], e["turn_id"]) for e in history]
    assert ("user", old) in roles and roles.index(("user", old)) < roles.index(("assistant", old)), history
