"""Loopback ports for servers that tests start in child processes.

A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same range outgoing connections
draw their local ports from; between picking it and the child binding it, a Redis or HTTP client of another
test can take it (seen in CI: `voxmesh up`'s TTS service failed to bind port+3). Ports below that range are
never handed out implicitly, so a free one stays free until a test binds it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOW = 20_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_run(count: int = 1) -> int:
    """The first of `count` consecutive free loopback ports, all below the ephemeral range."""
    high = _ephemeral_start() - count
    for _ in range(200):
        first = random.randrange(_LOW, high)
        if all(_bindable(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports between {_LOW} and {high}")
