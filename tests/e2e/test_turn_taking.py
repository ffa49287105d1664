"""Turn-taking through the real mesh (`voxmesh up`, real Redis, the bundled models): a pause inside a
sentence keeps the turn open and the reply speculatively started on the first half leaves no trace; two
questions apart are two turns; silence and noise are none."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from clients.bench.metrics import PORT_OFFSETS
from clients.talk import ConversationResult, converse_pcm
from tests.e2e.conftest import RunningStack
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.e2e

RATE = 16_000
FRAME = 640  # 20 ms


async def _speculations(stack: RunningStack) -> dict[str, float]:
    """The gateway's speculative-reply counters, by outcome."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{stack.port + PORT_OFFSETS['gateway']}/metrics")).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "voxmesh_speculative_replies"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_a_pause_mid_sentence_keeps_one_turn_and_the_discarded_speculation_leaves_no_trace(
    stack: RunningStack, redis_url: str
) -> None:
    before = await _speculations(stack)
    pcm = (
        silence(300, RATE)
        + synthesize_speech("What is the capital of")
        + silence(600, RATE)
        + synthesize_speech("France?")
    )
    async with asyncio.timeout(200):
        conversation = await converse_pcm([pcm], url=stack.url, timeout_s=120)
        redis = Redis.from_url(redis_url)
        try:
            raw = await redis.lrange(f"vm:history:{{{conversation.session_id}}}", 0, -1)
        finally:
            await redis.aclose()
    after = await _speculations(stack)

    result = conversation.turns[0]
    assert len(result.turn_ids) == 1, f"the pause ended the turn: {conversation.trace}"
    heard = result.transcript.lower()
    assert "capital" in heard and "france" in heard, result.transcript
    assert result.reply_text and result.reply_audio
    # A reply was started on "What is the capital of" during the pause, then thrown away. On a loaded machine
    # Whisper can finish the pause's text after the speaker went on: then it is dropped before any reply.
    started, used, discarded = (after.get(k, 0) - before.get(k, 0) for k in ("started", "used", "discarded"))
    assert used == 1 and started == used + discarded, (before, after)
    assert discarded == 1 or started == 1, (before, after)
    trace = [e for e in conversation.trace if e.direction == "in"]
    kinds = [e.type for e in trace]
    assert kinds.count("transcript.final") == 1
    first_final = kinds.index("transcript.final")
    assert not {"reply.text", "audio.start", "audio"} & set(kinds[:first_final]), kinds
    assert kinds.count("audio.start") == 1 and kinds.count("audio.end") == 1
    assert not [e for e in trace if e.type == "error"], trace
    history = [json.loads(item) for item in raw]
    assert history == [], "the exchange is written when the next turn starts; the speculation never is"


async def _spoken(stack: RunningStack, first: str, gap_ms: int, second: str) -> ConversationResult:
    """Speak `first`, `gap_ms` of silence, then `second` into a fresh session; what came back."""
    pcm = silence(300, RATE) + synthesize_speech(first) + silence(gap_ms, RATE) + synthesize_speech(second)
    async with asyncio.timeout(200):
        return await converse_pcm([pcm], url=stack.url, timeout_s=120)


async def test_a_head_whisper_writes_as_a_sentence_still_keeps_one_turn(stack: RunningStack) -> None:
    # Before the pause Whisper writes "Set a reminder for mine.", which reads finished; it nearly wrote
    # "my", and that keeps the turn open (services/asr/turn_policy.py, `misheard_ending`).
    conversation = await _spoken(stack, "Set a reminder for my", 600, "doctor's appointment.")
    result = conversation.turns[0]
    assert len(result.turn_ids) == 1, f"the pause ended the turn: {conversation.trace}"
    assert "appointment" in result.transcript.lower(), result.transcript
    assert result.reply_audio


async def test_two_questions_apart_are_two_turns(stack: RunningStack) -> None:
    conversation = await _spoken(
        stack, "What is the capital of France?", 2500, "How many days are in a week?"
    )
    finals = [e for e in conversation.trace if e.direction == "in" and e.type == "transcript.final"]
    assert len(finals) == 2, finals
    assert finals[0].turn_id != finals[1].turn_id
    assert "capital" in str(finals[0].data["text"]).lower() and "week" in str(finals[1].data["text"]).lower()
    assert conversation.turns[0].reply_audio, "the second question got its answer"


async def _events_while_sending(url: str, pcm: bytes, then_s: float) -> list[dict[str, Any]]:
    """Send `pcm` in real time, listen `then_s` more; every JSON event received after session.started."""
    events: list[dict[str, Any]] = []
    async with connect(url, max_size=None) as ws:

        async def listen() -> None:
            async for frame in ws:
                if isinstance(frame, str):
                    events.append(json.loads(frame))

        listener = asyncio.create_task(listen())
        try:
            for offset in range(0, len(pcm), FRAME):
                await ws.send(pcm[offset : offset + FRAME])
                await asyncio.sleep(0.02)
            await asyncio.sleep(then_s)
        finally:
            listener.cancel()
    return [e for e in events if e["type"] != "session.started"]


async def test_silence_and_noise_open_no_turn(stack: RunningStack) -> None:
    rng = np.random.default_rng(7)
    noise = (rng.normal(0.0, 0.03 * 32768, size=3 * RATE)).clip(-32768, 32767).astype("<i2").tobytes()
    async with asyncio.timeout(60):
        events = await _events_while_sending(stack.url, silence(2000, RATE) + noise + silence(500, RATE), 2.0)
    assert events == [], events
