"""An ASR replica dies mid-session: another takes the session over and carries on from its checkpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest

from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import AudioFrame, SessionOpened, TranscriptFinal
from tests.ports import free_port_run
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

FRAME = 640


async def _start_asr(redis_url: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port_run()
    env = {**os.environ, "REDIS_URL": redis_url, "VOXMESH_ASR_HTTP_PORT": str(port),
           "VOXMESH_ASR_CLAIM_IDLE_MS": "1500"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.asr", env=env, stderr=subprocess.DEVNULL
    )
    async with httpx.AsyncClient() as client, asyncio.timeout(60):
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return proc, port
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def _speak(bus: Bus, session_id: str, pcm: bytes, first_seq: int) -> int:
    seq = first_seq
    for start in range(0, len(pcm), FRAME):
        frame = AudioFrame(session_id=session_id, turn_id=0, seq=seq, audio=pcm[start : start + FRAME])
        await bus.send_to_session(keys.audio_in(session_id), frame)
        seq += 1
        await asyncio.sleep(0.002)  # faster than real time, still a stream
    return seq


async def _transcripts(tail: StreamTail, want: int, seen: list[str]) -> None:
    async with asyncio.timeout(45):
        while len(seen) < want:
            seen += [d.message.text for d in await tail.read() if isinstance(d.message, TranscriptFinal)]


async def test_session_survives_the_death_of_its_asr_replica(bus: Bus, redis_url: str) -> None:
    sid = "failover"
    await bus.send(keys.ASR_DISPATCH, SessionOpened(session_id=sid, turn_id=0, seq=0))
    first, _ = await _start_asr(redis_url)
    tail = StreamTail(bus, keys.session_out(sid), label="test", block_ms=200)
    seen: list[str] = []
    try:
        utterance = (
            silence(300, 16000) + synthesize_speech("What is the capital of France?") + silence(1200, 16000)
        )
        seq = await _speak(bus, sid, utterance, 0)
        await _transcripts(tail, 1, seen)
        await asyncio.sleep(1.0)  # let the owner checkpoint past the first utterance

        first.send_signal(signal.SIGKILL)
        await first.wait()
        second_utterance = synthesize_speech("The weather is sunny today.") + silence(1200, 16000)
        await _speak(bus, sid, second_utterance, seq)
        second, _ = await _start_asr(redis_url)
        try:
            await _transcripts(tail, 2, seen)
            await asyncio.sleep(1.0)  # a replay of the first utterance would show up now
            seen += [d.message.text for d in await tail.read() if isinstance(d.message, TranscriptFinal)]
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), timeout=20) == 0
    finally:
        await tail.close()

    assert "france" in seen[0].lower(), seen
    assert len(seen) == 2, f"each utterance transcribed once: {len(seen)} transcripts"
    assert "sunny" in seen[1].lower() or "weather" in seen[1].lower()
