"""The reference client (`voxmesh talk`) resumes its session when its connection drops: a TCP proxy between
it and the gateway cuts the connection (both ways, no close frame) just after the first reply's `audio.end`;
the client connects again with its resume key and the second question is answered in the same session,
knowing the first. Real ASR (Whisper), LLM (behind a fake Gemini), TTS and gateway processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from clients.talk import converse_pcm
from shared.bus import Bus
from tests.fake_gemini import FakeGeminiServer
from tests.mesh_support import llm_and_tts, service_process
from tests.ports import free_port_run
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

REPLY = "Paris is the capital of France."


class CuttingProxy:
    """Forwards TCP to the gateway; cuts the first connection whose server side sends `marker`, once."""

    def __init__(self, target_port: int, marker: bytes) -> None:
        self.target_port = target_port
        self.marker = marker
        self.cuts = 0
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        def cut() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, watch: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
                    if watch and not self.cuts and self.marker in data:
                        self.cuts += 1
                        cut()
                        return
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


@asynccontextmanager
async def cutting_proxy(target_port: int, marker: bytes) -> AsyncIterator[tuple[CuttingProxy, int]]:
    proxy = CuttingProxy(target_port, marker)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield proxy, port
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)


def _question(text: str) -> bytes:
    return silence(300, 16000) + synthesize_speech(text)


async def test_the_talk_client_resumes_its_session_when_the_connection_drops(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    asr_env = {"VOXMESH_ASR_TURN_POLICY": "false"}
    gateway_env = {"VOXMESH_GATEWAY_METRICS_PORT": str(free_port_run())}
    with FakeGeminiServer(reply=REPLY) as gemini:
        async with (
            llm_and_tts(redis_url, tmp_path, gemini),
            service_process("asr", redis_url, tmp_path, **asr_env),
            service_process("gateway", redis_url, tmp_path, **gateway_env) as gateway,
            cutting_proxy(gateway.port, b'"audio.end"') as (proxy, port),
        ):
            result = await converse_pcm(
                [_question("What is the capital of France?"), _question("What about Italy?")],
                url=f"ws://127.0.0.1:{port}/v1/realtime",
                timeout_s=60,
            )
    assert proxy.cuts == 1 and proxy.connections == 2, "cut once, then one connection resumed it"
    first, second = result.turns
    assert "france" in first.transcript.lower() and first.reply_text == REPLY
    assert "italy" in second.transcript.lower() and second.reply_text == REPLY
    assert second.turn_id is not None and first.turn_id is not None and second.turn_id > first.turn_id
    started = [e.data for e in result.trace if e.type == "session.started"]
    assert [s["session_id"] for s in started] == [result.session_id] * 2 and started[1]["resumed"] is True
    italy = [json.dumps(r.body) for r in gemini.requests if "Italy" in json.dumps(r.body)]
    assert italy and "France" in italy[-1], "the first question is in the second one's context"
