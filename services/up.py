"""`voxmesh up`: Redis (bundled unless REDIS_URL is set) and the four services as separate processes."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from types import FrameType

import httpx

from services.gateway.access import is_loopback
from shared.redis_server import LocalRedisServer

SERVICES = ("asr", "llm", "tts", "gateway")
MODEL_SERVICES = ("asr", "llm", "tts")
READY_TIMEOUT_S = 300.0
METRICS_PORT_OFFSET = 4  # the gateway's /metrics: P+4, after the workers' P+1..P+3


class Stack:
    """The running processes; stops them all, children first, Redis last."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.redis: LocalRedisServer | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.http_ports = {"gateway": port, "asr": port + 1, "llm": port + 2, "tts": port + 3}

    def start(self) -> None:
        """Start Redis if needed, then every service."""
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            self.redis = LocalRedisServer()
            redis_url = self.redis.start()
            print(f"redis: bundled redis-server on {redis_url}", flush=True)
        for name in SERVICES:
            prefix = f"VOXMESH_{name.upper()}_"
            env = {**os.environ, "REDIS_URL": redis_url, f"{prefix}HTTP_PORT": str(self.http_ports[name])}
            # Three model services share this machine's CPUs: each takes its part for inference threads.
            env.setdefault("VOXMESH_CPU_SHARE", str(len(MODEL_SERVICES)))
            if name == "gateway":
                env.update(self.gateway_env())
            self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env)

    def gateway_env(self) -> dict[str, str]:
        """Where the gateway listens, and on loopback the page's token endpoint (unless set otherwise)."""
        env = {
            "VOXMESH_GATEWAY_HTTP_HOST": self.host,
            "VOXMESH_GATEWAY_METRICS_PORT": str(self.port + METRICS_PORT_OFFSET),
        }
        if is_loopback(self.host) and os.environ.get("VOXMESH_GATEWAY_TOKEN_ENDPOINT") is None:
            env["VOXMESH_GATEWAY_TOKEN_ENDPOINT"] = "true"
            if not os.environ.get("VOXMESH_TOKEN_SECRET") and not os.environ.get("VOXMESH_TOKEN_SECRET_FILE"):
                # This run only, handed to the gateway alone and never printed: it signs the page's tokens.
                env["VOXMESH_TOKEN_SECRET"] = secrets.token_urlsafe(32)
        return env

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every service answers /readyz with 200; raise if one dies or time runs out."""
        waiting = set(SERVICES)
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as client:
            while waiting:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not ready after {timeout_s:.0f} s: {', '.join(sorted(waiting))}")
                for name in list(waiting):
                    try:
                        if client.get(f"http://127.0.0.1:{self.http_ports[name]}/readyz").status_code == 200:
                            waiting.discard(name)
                            print(f"{name}: ready", flush=True)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.2)

    def check_alive(self) -> None:
        """Raise if any service process has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"service {name} exited with code {proc.returncode}")

    def stop(self, timeout_s: float = 20.0) -> list[str]:
        """SIGTERM every service (they drain), kill stragglers, stop Redis; returns services that failed."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.redis is not None:
            self.redis.stop()
        return [f"{name} ({proc.returncode})" for name, proc in self.procs.items() if proc.returncode != 0]


def up(host: str, port: int) -> int:
    """Run the whole assistant until Ctrl-C or SIGTERM."""
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stack = Stack(host, port)
    code = 0
    try:
        stack.start()
        stack.wait_ready()
        print(
            f"voxmesh is ready: http://{host}:{port}  (WebSocket ws://{host}:{port}/v1/realtime)", flush=True
        )
        token = "" if is_loopback(host) else ' --token "$(voxmesh token)"'  # beyond loopback: tokens
        print(
            f"talk to it:  voxmesh talk question.wav --out reply.wav --json{token}   (Ctrl-C stops)",
            flush=True,
        )
        while not stopping:
            stack.check_alive()
            time.sleep(0.2)
    except (RuntimeError, TimeoutError) as exc:
        if not stopping:
            print(f"voxmesh up: {exc}", file=sys.stderr, flush=True)
            code = 1
    finally:
        print("stopping...", flush=True)
        failed = stack.stop()
        if failed:
            print(
                f"voxmesh up: services did not stop cleanly: {', '.join(failed)}", file=sys.stderr, flush=True
            )
            code = 1
    return code
