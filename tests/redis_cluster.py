"""A real three-master Redis Cluster (Debian's redis-server and redis-cli) for the tests that need one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.redis_server import LocalRedisCluster
from tests.ports import free_port_run

MASTERS = 3


@contextmanager
def running_cluster() -> Iterator[LocalRedisCluster]:
    """Three masters on loopback ports (their cluster bus ports next to them), no replicas.

    Skipped without Debian's redis-server and redis-cli (package redis-server), which .ci/run installs:
    in CI their absence is a failure."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} must be installed in CI")
        pytest.skip(f"{', '.join(missing)} not installed (Debian package redis-server)")
    first = free_port_run(2 * MASTERS)
    ports = range(first, first + MASTERS)
    bus_ports = range(first + MASTERS, first + 2 * MASTERS)
    with LocalRedisCluster(ports, bus_ports=bus_ports) as cluster:
        yield cluster
