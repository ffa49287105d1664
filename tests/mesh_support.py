"""Service processes on a real Redis for tests (`python -m services.<name>`, ready once `/readyz` says
so), and a stand-in for the ASR that takes sessions and says what the user said, so a test can run a turn
without speech or Whisper."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared import keys
from shared.bus import Bus, WorkQueue
from shared.schema import SessionOpened, SpeechStarted, TranscriptFinal
from tests.fake_gemini import FakeGeminiServer
from tests.ports import free_port_run

_READY_S = 120.0
_DROPPED_ENV = ("REDIS_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class ServiceProcess:
    """A running service process, its health port and its log."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        """Where its `/healthz` and `/readyz` answer."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What it logged so far (the end of it)."""
        return self.log_path.read_text(errors="replace")[-4000:]


async def wait_ready(
    url: str, process: asyncio.subprocess.Process | None = None, within: float = _READY_S
) -> None:
    """Poll `url`/readyz until it answers 200."""
    async with httpx.AsyncClient(trust_env=False) as client, asyncio.timeout(within):
        while True:
            if process is not None and process.returncode is not None:
                raise RuntimeError(f"exited with {process.returncode} before it was ready")
            try:
                if (await client.get(f"{url}/readyz", timeout=1.0)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


@asynccontextmanager
async def service_process(
    name: str, redis_url: str, log_dir: Path, *, module: str = "", **env: str
) -> AsyncIterator[ServiceProcess]:
    """`python -m services.<name>` (or `python -m <module> <name>`, e.g. the fake engines of
    clients.bench.fakes) on `redis_url` with `env` (VOXMESH_* from the developer's shell left out);
    SIGTERM on the way out."""
    port = int(env.pop("port", 0)) or free_port_run()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOXMESH_") and k not in _DROPPED_ENV}
    full_env = {**clean, "REDIS_URL": redis_url, f"VOXMESH_{name.upper()}_HTTP_PORT": str(port), **env}
    log_path = log_dir / f"{name}-{port}.log"
    command = ["-m", module, name] if module else ["-m", f"services.{name}"]
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, env=full_env, stdout=log, stderr=log
        )
    running = ServiceProcess(process, port, log_path)
    try:
        try:
            await wait_ready(running.base_url, process)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{name} did not become ready: {exc}\n{running.log()}") from exc
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()


@asynccontextmanager
async def llm_and_tts(
    redis_url: str, log_dir: Path, gemini: FakeGeminiServer
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    """The LLM service answering with the fake Gemini, and the TTS service with the bundled piper voice."""
    llm_env = {
        "GEMINI_API_KEY": gemini.api_key, "VOXMESH_LLM_GEMINI_BASE_URL": gemini.base_url,
        "VOXMESH_LLM_FIRST_PHRASE_YIELD_MS": "0", "VOXMESH_LLM_TOOLS": "false",
    }  # fmt: skip
    async with (
        service_process("llm", redis_url, log_dir, **llm_env) as llm,
        service_process("tts", redis_url, log_dir) as tts,
    ):
        yield llm, tts


class FakeAsr:
    """Takes every new session off the ASR dispatch queue, as a replica with room does (so the gateway
    sees it admitted), and, when told, reports an utterance on the session's output as the ASR would."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.sessions: list[str] = []
        self._queue = WorkQueue(
            bus, keys.ASR_DISPATCH, keys.ASR_GROUP, "fake-asr", label="fake", block_ms=100
        )
        self._utterance = 0

    async def run(self) -> None:
        """Take sessions until cancelled."""
        await self._queue.ensure_group()
        try:
            while True:
                for delivery in await self._queue.read(count=10):
                    if isinstance(delivery.message, SessionOpened):
                        self.sessions.append(delivery.message.session_id)
        finally:
            await self._queue.close()

    async def say(self, session_id: str, text: str) -> None:
        """The user said `text` and fell silent: speech started, then its final transcript."""
        self._utterance += 100
        out = keys.session_out(session_id)
        ids = {"session_id": session_id, "turn_id": 0, "utterance": self._utterance}
        await self.bus.send_to_session(out, SpeechStarted(**ids, seq=self._utterance, at_ms=0))
        final = TranscriptFinal(**ids, seq=self._utterance + 1, text=text, speech_ended_at=time.time())
        await self.bus.send_to_session(out, final)


@asynccontextmanager
async def fake_asr(bus: Bus) -> AsyncIterator[FakeAsr]:
    """A FakeAsr taking sessions while the block runs."""
    asr = FakeAsr(bus)
    task = asyncio.create_task(asr.run())
    try:
        yield asr
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise
