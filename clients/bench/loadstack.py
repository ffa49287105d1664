"""The processes `voxmesh bench load` measures: Redis, gateway(s), and ASR, LLM and TTS workers (the real
services, or their loops with fake engines), each service with as many replicas as asked."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from shared.redis_server import LocalRedisServer, free_port, server_binary_for

Engines = Literal["fake", "real"]
SERVICES = ("gateway", "asr", "llm", "tts")
WORKERS = ("asr", "llm", "tts")
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


@dataclass
class ServiceProcess:
    """One replica: its name (`asr-2`), service, process, and the port of its /readyz and /metrics."""

    name: str
    service: str
    process: subprocess.Popen[bytes]
    ready_port: int
    metrics_port: int
    public_port: int | None = None  # the gateway's WebSocket port

    @property
    def url(self) -> str:
        """The gateway's realtime WebSocket URL."""
        return f"ws://127.0.0.1:{self.public_port}/v1/realtime"


class LoadStack:
    """Starts everything on loopback, waits until every replica is ready, stops it all (Redis last)."""

    def __init__(
        self,
        engines: Engines,
        replicas: dict[str, int],
        *,
        max_sessions: int,
        fake_env: dict[str, str] | None = None,
        redis_url: str | None = None,
        log_level: str = "warning",
    ) -> None:
        self.engines = engines
        self.replicas = {service: max(1, replicas.get(service, 1)) for service in SERVICES}
        self.max_sessions = max_sessions
        self.fake_env = fake_env or {}
        self.redis_url = redis_url
        self.log_level = log_level
        self.redis: LocalRedisServer | None = None
        self.processes: list[ServiceProcess] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="voxmesh-load-"))

    @property
    def gateway_urls(self) -> list[str]:
        """Every gateway's WebSocket URL."""
        return [p.url for p in self.processes if p.service == "gateway"]

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Every replica's /metrics, by replica name."""
        return {p.name: f"http://127.0.0.1:{p.metrics_port}/metrics" for p in self.processes}

    def pids(self) -> dict[str, int]:
        """Every process under test by name (Redis as `redis` when this stack started it)."""
        found = {p.name: p.process.pid for p in self.processes}
        if self.redis is not None and self.redis.pid is not None:
            found["redis"] = self.redis.pid
        return found

    def start(self) -> None:
        """Redis (Debian's redis-server when installed, else the bundled one), then every replica."""
        url = self.redis_url
        if url is None:
            binary = server_binary_for("redis-server" if shutil.which("redis-server") else "bundled")
            self.redis = LocalRedisServer(binary)
            url = self.redis.start()
        self.redis_url = url
        for service in SERVICES:
            for index in range(1, self.replicas[service] + 1):
                self.processes.append(self._spawn(service, index, url))

    def _command(self, service: str) -> list[str]:
        if service == "gateway" or self.engines == "real":
            return [sys.executable, "-m", f"services.{service}"]
        return [sys.executable, "-m", "clients.bench.fakes", service]

    def _spawn(self, service: str, index: int, redis_url: str) -> ServiceProcess:
        prefix = f"VOXMESH_{service.upper()}_"
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            f"{prefix}HTTP_PORT": str(port),
            f"{prefix}LOG_LEVEL": self.log_level,
            # As `voxmesh up`: the three model services share this machine's CPUs.
            "VOXMESH_CPU_SHARE": os.environ.get("VOXMESH_CPU_SHARE", str(len(WORKERS))),
            **self.fake_env,
        }
        name = f"{service}-{index}"
        metrics_port = port
        public: int | None = None
        if service == "gateway":
            public, metrics_port = port, free_port()
            env |= {
                f"{prefix}METRICS_PORT": str(metrics_port),
                f"{prefix}MAX_SESSIONS": str(self.max_sessions),
                f"{prefix}MAX_SESSIONS_PER_IP": "0",  # every client of the benchmark is on loopback
                f"{prefix}AUTH": "off",
            }
        elif service == "asr":
            env[f"{prefix}MAX_SESSIONS"] = str(self.max_sessions)
        elif self.engines == "fake":
            # Fake engines take no CPU while they wait: one replica may run every session's work at once.
            env[f"{prefix}CONCURRENCY"] = str(self.max_sessions)
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                self._command(service),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return ServiceProcess(name, service, process, port, metrics_port, public)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every replica answers /readyz with 200; raise if one exits or time runs out."""
        waiting = {p.name: p for p in self.processes}
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as client:
            while waiting:
                for name, proc in list(waiting.items()):
                    if proc.process.poll() is not None:
                        raise RuntimeError(
                            f"{name} exited with code {proc.process.returncode}:\n{self.tail(name)}"
                        )
                    try:
                        response = client.get(f"http://127.0.0.1:{proc.ready_port}/readyz")
                    except httpx.HTTPError:
                        continue
                    if response.status_code == 200:
                        del waiting[name]
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {timeout_s:.0f} s: {', '.join(sorted(waiting))}")
                time.sleep(0.2)

    def check_alive(self) -> None:
        """Raise if a replica has exited."""
        for proc in self.processes:
            if proc.process.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with code {proc.process.returncode}")

    def tail(self, name: str, chars: int = 2000) -> str:
        """The end of a replica's log."""
        try:
            return (self.log_dir / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM every replica (they drain), kill stragglers, then stop Redis."""
        for proc in self.processes:
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.processes:
            try:
                proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LoadStack:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
