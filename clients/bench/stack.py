"""`voxmesh up` in a subprocess for the length of a benchmark: started, awaited, SIGTERMed."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READY_LINE = "voxmesh is ready"
READY_TIMEOUT_S = 360.0  # `voxmesh up` itself gives up after 300 s
STOP_TIMEOUT_S = 60.0


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


def _wait_ready(process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while READY_LINE not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"voxmesh up exited with code {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"voxmesh up not ready after {timeout_s:.0f} s:\n{_tail(log)}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the services drain and exit, then Redis stops
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def voxmesh_up(port: int, ready_timeout_s: float = READY_TIMEOUT_S) -> Iterator[str]:
    """Run `voxmesh up --port PORT` until the block ends; yields the gateway's WebSocket URL."""
    # Its output goes to a file, not a pipe: nobody reads a pipe once the stack is up, and a full one
    # would block the services' logging.
    with tempfile.NamedTemporaryFile("w+b", prefix="voxmesh-up-", suffix=".log") as log:
        command = [sys.executable, "-m", "services.cli", "up", "--port", str(port)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, Path(log.name), ready_timeout_s)
            yield f"ws://127.0.0.1:{port}/v1/realtime"
        finally:
            _stop(process)
