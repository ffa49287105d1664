"""Interrupting a reply: the client's cancel stops the audio at once and no stale audio follows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from shared.audio import frames, read_wav, to_mono16k
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e


async def _microphone(ws: ClientConnection, pcm: bytes) -> None:
    """Stream the question, then silence, in real time, as an open microphone does."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    audio = list(frames(pcm, 640))
    for index in range(10_000):
        await ws.send(audio[index] if index < len(audio) else b"\x00" * 640)
        await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))


async def test_cancel_stops_reply_audio_and_nothing_stale_follows(
    stack: RunningStack, question_wav: Path
) -> None:
    pcm, rate = read_wav(question_wav)
    async with connect(stack.url) as ws:
        mic = asyncio.create_task(_microphone(ws, to_mono16k(pcm, rate)))
        try:
            events: list[str] = []
            after_clear_audio = 0
            async with asyncio.timeout(60):
                while "audio.start" not in events:
                    frame = await ws.recv()
                    if isinstance(frame, str):
                        events.append(json.loads(frame)["type"])
            await ws.send(json.dumps({"type": "response.cancel"}))
            loop = asyncio.get_running_loop()
            cleared_at: float | None = None
            deadline = loop.time() + 10
            while loop.time() < deadline and (cleared_at is None or loop.time() < cleared_at + 2.0):
                try:
                    frame = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                if isinstance(frame, str):
                    event = json.loads(frame)["type"]
                    events.append(event)
                    if event == "audio.clear":
                        cleared_at = loop.time()
                elif cleared_at is not None:
                    after_clear_audio += len(frame)
        finally:
            mic.cancel()
            await asyncio.gather(mic, return_exceptions=True)

    assert "audio.clear" in events, events
    assert after_clear_audio == 0, "no audio of the cancelled turn after audio.clear"
    assert "audio.end" not in events[events.index("audio.clear") :], "the cancelled reply never completes"
