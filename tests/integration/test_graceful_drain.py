"""SIGTERM during a turn: the turn completes, readiness goes false at once, new sessions are refused, and
the process exits within its grace. Real service processes (the LLM behind a fake Gemini, the TTS with
the bundled voice, the gateway); the ASR is stood in for."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.bus import Bus
from tests.fake_gemini import FakeGeminiServer
from tests.mesh_support import ServiceProcess, fake_asr, llm_and_tts, service_process
from tests.ports import free_port_run

pytestmark = pytest.mark.integration

REPLY = (
    "Paris is the capital of France. It sits on the river Seine. It is known for the Eiffel Tower, "
    "and for its long avenues."
)
GRACE_S = 10.0


async def _readiness_after_sigterm(service: ServiceProcess) -> tuple[float, dict[str, Any]]:
    """SIGTERM the service, then poll /readyz: how long until it said not ready, and what it said."""
    async with httpx.AsyncClient(base_url=service.base_url, trust_env=False, timeout=1.0) as client:
        assert (await client.get("/readyz")).status_code == 200
        service.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while True:
            ready = await client.get("/readyz")
            if ready.status_code == 503:
                return time.monotonic() - signalled, ready.json()
            await asyncio.sleep(0.02)


async def _until(ws: ClientConnection, kind: str, within: float) -> list[str | bytes]:
    got: list[str | bytes] = []
    async with asyncio.timeout(within):
        while not (got and isinstance(got[-1], str) and json.loads(got[-1])["type"] == kind):
            got.append(await ws.recv())
    return got


def _reply_text(frames: list[str | bytes]) -> str:
    events = [json.loads(frame) for frame in frames if isinstance(frame, str)]
    return " ".join(" ".join(e["text"] for e in events if e["type"] == "reply.text").split())


async def _exit_code(process: asyncio.subprocess.Process, within: float) -> int:
    return await asyncio.wait_for(process.wait(), timeout=within)


async def test_sigterm_to_the_gateway_during_a_turn(bus: Bus, redis_url: str, tmp_path: Path) -> None:
    gateway_env = {
        "VOXMESH_GATEWAY_METRICS_PORT": str(free_port_run()),
        "VOXMESH_GATEWAY_SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    with FakeGeminiServer(reply=REPLY, words_per_chunk=2, delay_s=0.1) as gemini:
        async with (
            llm_and_tts(redis_url, tmp_path, gemini),
            fake_asr(bus) as asr,
            service_process("gateway", redis_url, tmp_path, **gateway_env) as gateway,
        ):
            url = f"ws://127.0.0.1:{gateway.port}/v1/realtime"
            async with connect(url, proxy=None) as ws:
                session_id = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))["session_id"]
                await asr.say(session_id, "Tell me about Paris.")
                before = await _until(ws, "audio.start", within=60)

                took_s, readiness = await _readiness_after_sigterm(gateway)
                signalled = time.monotonic() - took_s
                assert took_s < 0.5 and readiness["draining"] is True

                async with connect(url, proxy=None) as late:  # no new sessions while draining
                    with pytest.raises(ConnectionClosed) as refused:
                        await asyncio.wait_for(late.recv(), timeout=5)
                assert refused.value.rcvd is not None and refused.value.rcvd.code == 1013

                rest = await _until(ws, "audio.end", within=GRACE_S)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), timeout=GRACE_S)
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "server shutting down")

            code = await _exit_code(gateway.process, within=GRACE_S + 5)
            exited_s = time.monotonic() - signalled
    assert code == 0, gateway.log()
    assert exited_s < GRACE_S, f"exited {exited_s:.1f} s after SIGTERM, grace {GRACE_S} s"
    assert _reply_text(before + rest) == " ".join(REPLY.split()), "the whole reply was sent"
    assert sum(isinstance(f, bytes) for f in rest) > 0, "its audio went on after SIGTERM"


async def test_sigterm_to_the_llm_during_a_turn(bus: Bus, redis_url: str, tmp_path: Path) -> None:
    with FakeGeminiServer(reply=REPLY, words_per_chunk=2, delay_s=0.15) as gemini:
        async with (
            llm_and_tts(redis_url, tmp_path, gemini) as (llm, _),
            fake_asr(bus) as asr,
            service_process(
                "gateway", redis_url, tmp_path, VOXMESH_GATEWAY_METRICS_PORT=str(free_port_run())
            ) as gw,
            connect(f"ws://127.0.0.1:{gw.port}/v1/realtime", proxy=None) as ws,
        ):
            session_id = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))["session_id"]
            await asr.say(session_id, "Tell me about Paris.")
            before = await _until(ws, "reply.text", within=60)  # the LLM is part-way through
            took_s, readiness = await _readiness_after_sigterm(llm)
            signalled = time.monotonic() - took_s
            assert took_s < 0.5 and readiness["draining"] is True
            rest = await _until(ws, "audio.end", within=30)
            code = await _exit_code(llm.process, within=15)
            exited_s = time.monotonic() - signalled
    assert code == 0, llm.log()
    assert exited_s < 10.0, f"the LLM exited {exited_s:.1f} s after SIGTERM (its grace: 10 s)"
    assert _reply_text(before + rest) == " ".join(REPLY.split()), "the draining replica finished it"
