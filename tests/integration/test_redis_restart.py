"""Redis restarts (down about a second, its data gone) under a running service process: the process stays
up, a reply in flight ends with its answer or an error within 5 s, and new requests are answered."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from shared import keys
from shared.bus import Bus
from shared.redis_server import LocalRedisServer
from shared.schema import Message, ReplyDone, ReplyPhrase, ReplyRequested, ServiceError
from shared.turns import open_turn
from tests.conftest import REDIS_SERVERS, _redis_binary
from tests.eventually import output_until
from tests.fake_gemini import FakeGeminiServer
from tests.ports import free_port_run

pytestmark = pytest.mark.integration

REPLY = "Paris is the capital of France. It is known for the Eiffel Tower, and for its long avenues."


@asynccontextmanager
async def llm_process(redis_url: str, gemini: FakeGeminiServer) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m services.llm` answering with the fake Gemini, once ready; SIGTERM at the end."""
    port = free_port_run()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")},
        "REDIS_URL": redis_url, "VOXMESH_LLM_HTTP_PORT": str(port), "GEMINI_API_KEY": gemini.api_key,
        "VOXMESH_LLM_GEMINI_BASE_URL": gemini.base_url, "VOXMESH_LLM_FIRST_PHRASE_YIELD_MS": "0",
    }  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.llm", env=env, stderr=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)


def _ask(session_id: str) -> ReplyRequested:
    return ReplyRequested(
        session_id=session_id, turn_id=0, seq=0, text="Capital of France?", speech_ended_at=0
    )


def _ended(message: Message) -> bool:
    return isinstance(message, ReplyDone | ServiceError)


@pytest.mark.parametrize("kind", REDIS_SERVERS)
async def test_a_service_rides_out_a_redis_restart(kind: str) -> None:
    binary = _redis_binary(kind)
    redis = LocalRedisServer(binary)
    redis.start()
    bus = Bus(redis.url)
    try:
        with FakeGeminiServer(reply=REPLY, words_per_chunk=2, delay_s=0.25) as gemini:
            async with llm_process(redis.url, gemini) as proc:
                await bus.send(keys.LLM_REQUESTS, _ask("before"))
                assert any(_ended(m) for m in await output_until(bus, "before", _ended, 20))

                await bus.send(keys.LLM_REQUESTS, _ask("in-flight"))
                await output_until(bus, "in-flight", lambda m: isinstance(m, ReplyPhrase), 20)
                redis.stop()
                await asyncio.sleep(1.0)
                redis = LocalRedisServer(binary, port=redis.port)
                redis.start()
                restarted = time.monotonic()

                # The reply being written when Redis went away ends (what was sent before is lost with Redis).
                await output_until(bus, "in-flight", _ended, 5)
                await bus.send(keys.LLM_REQUESTS, _ask("after"))
                out = await output_until(bus, "after", _ended, max(0.5, 5 - (time.monotonic() - restarted)))
                ends = [m for m in out if _ended(m)]
                assert ends and isinstance(ends[0], ReplyDone), ends  # answered (its usage report may follow)
                assert proc.returncode is None, "the service process is still running"
            assert proc.returncode == 0
    finally:
        await bus.close()
        redis.stop()


async def test_turn_numbers_keep_rising_across_a_redis_that_lost_them(bus: Bus) -> None:
    """A restarted Redis has lost the session's turn counter; the gateway's next turn must still be newer
    than every turn it handed out, or a stale reply would pass for the current one."""
    await bus.redis.delete(keys.turn_counter("s1"))
    assert await open_turn(bus.redis, "s1", above=7) == 8
    assert await open_turn(bus.redis, "s1", above=8) == 9
    assert await open_turn(bus.redis, "s1") == 10
