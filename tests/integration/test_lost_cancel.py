"""A cancel broadcast that never arrives: the LLM and TTS processes go on with the cancelled turn, and the
gateway's own check keeps every bit of it from the client (a lost cancel does no harm).

The gateway runs in this process, its Redis client's PUBLISH made a no-op; the LLM (a fake Gemini behind
it) and the TTS (the bundled piper voice) are real service processes; the ASR is stood in for."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from services.gateway.settings import GatewaySettings
from shared import keys
from shared.bus import Bus
from shared.schema import AudioChunk, ReplyPhrase, decode
from tests.fake_gemini import FakeGeminiServer
from tests.gateway_support import serving
from tests.mesh_support import fake_asr, llm_and_tts
from tests.ports import free_port_run

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_voxmesh_env")]

LONG_REPLY = (
    "Paris is the capital of France. It sits on the river Seine, in the north of the country. "
    "It is known for the Eiffel Tower, which was built for a world fair. The Louvre holds the Mona Lisa. "
    "Its cafes, parks and long avenues draw visitors from all over the world, all year round. "
    "Many people think it is one of the most beautiful cities there is."
)


async def _frames_until(ws: ClientConnection, done: Any, within: float) -> list[str | bytes]:
    got: list[str | bytes] = []
    async with asyncio.timeout(within):
        while not done(got):
            got.append(await ws.recv())
    return got


def _events(frames: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in frames if isinstance(frame, str)]


async def test_with_the_cancel_broadcast_lost_no_audio_of_the_cancelled_turn_reaches_the_client(
    bus: Bus, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_bus = Bus(redis_url)
    suppressed: list[str] = []

    async def publish_nothing(channel: str, message: bytes) -> int:
        suppressed.append(channel)
        return 0

    monkeypatch.setattr(gateway_bus.redis, "publish", publish_nothing)
    heard: list[Any] = []
    listener = bus.blocking_client()
    settings = GatewaySettings(http_host="127.0.0.1", http_port=free_port_run(), auth="off")
    async with listener.pubsub() as pubsub:
        await pubsub.subscribe(keys.CANCEL_CHANNEL)
        with FakeGeminiServer(reply=LONG_REPLY, words_per_chunk=2, delay_s=0.12) as gemini:
            async with (
                llm_and_tts(redis_url, tmp_path, gemini),
                serving(settings, gateway_bus, drain_s=2.0),
                fake_asr(bus) as asr,
                connect(f"ws://127.0.0.1:{settings.http_port}/v1/realtime", proxy=None) as ws,
            ):
                started = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
                session_id = started["session_id"]
                await asr.say(session_id, "Tell me about Paris.")
                # The reply plays: wait for its first audio.
                before = await _frames_until(ws, lambda got: any(isinstance(f, bytes) for f in got), 60)
                [start] = [e for e in _events(before) if e["type"] == "audio.start"]
                assert start["turn_id"] == 1

                await ws.send(json.dumps({"type": "response.cancel"}))
                await ws.send(json.dumps({"type": "ping"}))  # answered after the cancel was handled
                to_pong = await _frames_until(ws, lambda got: any('"pong"' in str(f) for f in got), 5)
                cancelled_ms = time.time() * 1000
                assert {"type": "audio.clear", "turn_id": 1} in _events(to_pong)

                # The LLM is still writing the cancelled reply and TTS still speaking it; none may show.
                late: list[str | bytes] = []
                try:
                    async with asyncio.timeout(6):
                        while True:
                            late.append(await ws.recv())
                except TimeoutError:
                    pass
                entries: Any = await bus.redis.xrange(keys.session_out(session_id))
        while (message := await pubsub.get_message(timeout=0.1)) is not None:
            if message["type"] == "message":
                heard.append(message["data"])
    await listener.aclose()
    await gateway_bus.close()

    assert suppressed and not heard, "the cancel broadcast was suppressed"
    late_output = [
        message
        for entry_id, fields in entries
        if int(entry_id.split(b"-")[0]) > cancelled_ms
        and isinstance(message := decode(fields), ReplyPhrase | AudioChunk)
        and message.turn_id == 1
    ]
    assert late_output, "the services went on with the cancelled turn (the test shows something)"
    assert not [f for f in late if isinstance(f, bytes)], "audio of the cancelled turn reached the client"
    assert not [e for e in _events(late) if e.get("turn_id") == 1 and e["type"] != "reply.truncated"]
