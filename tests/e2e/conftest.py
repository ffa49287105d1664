"""The whole assistant as a user runs it: `voxmesh up` in a subprocess, four services, real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.ports import free_port_run
from tests.speech import speech_wav

READY_LINE = "voxmesh is ready"


@dataclass(frozen=True)
class RunningStack:
    """A `voxmesh up` process and where its gateway listens."""

    process: subprocess.Popen[str]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """The realtime WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


def start_stack(log_path: Path, redis_url: str | None) -> RunningStack:
    """Run `voxmesh up` on a free port and wait for its ready line."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    port = free_port_run(5)  # the gateway, then asr, llm and tts on the next three, the gateway's /metrics
    with log_path.open("w") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + 240
    for line in process.stdout:
        if READY_LINE in line:
            return RunningStack(process, port, log_path)
        if time.monotonic() > deadline:
            break
    stop_stack(RunningStack(process, port, log_path))
    raise RuntimeError(f"voxmesh up did not become ready; log: {log_path.read_text()[-3000:]}")


def stop_stack(stack: RunningStack) -> None:
    """SIGTERM `voxmesh up` (it stops its services) and check it exits cleanly."""
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGTERM)
        try:
            stack.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            stack.process.kill()
            stack.process.wait()
    if stack.process.stdout:
        stack.process.stdout.close()


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spoken question, synthesized with the bundled piper voice."""
    return speech_wav(tmp_path_factory.mktemp("speech") / "question.wav", "What is the capital of France?")


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The four services on the parametrized real Redis (bundled 6.2 and Debian 7.x), emptied first: the Redis
    lives for the whole run, and sessions a module before left in the ASR's queue would otherwise be taken
    first (a fuzzing module leaves hundreds), so a new session could wait past the admission limit."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    running = start_stack(tmp_path_factory.mktemp("stack") / "services.log", redis_url)
    yield running
    stop_stack(running)
    assert running.process.returncode == 0, running.log_path.read_text()[-3000:]
