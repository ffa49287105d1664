"""Shared fixtures: real Redis servers (bundled 6.2 and Debian's 7.x), one per test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from shared.bus import Bus
from shared.redis_server import LocalRedisServer, server_binary_for

# The bundled server always exists; Debian's is installed by .ci/run (and `make test`).
REDIS_SERVERS = ["bundled", "redis-server"]
_CATEGORIES = {"unit", "integration", "e2e"}

# Property-based tests (hypothesis): `smoke` in every run; `--hypothesis-profile=fuzz` is the full fuzzing
# run, 100,000 inputs per test (docs/security.md). No example database: runs leave no files behind.
settings.register_profile("smoke", max_examples=300, deadline=None, database=None)
settings.register_profile(
    "fuzz",
    max_examples=100_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("smoke")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test carries exactly one category marker."""
    for item in items:
        found = {mark.name for mark in item.iter_markers()} & _CATEGORIES
        if len(found) != 1:
            raise pytest.UsageError(f"{item.nodeid} needs exactly one of {sorted(_CATEGORIES)}")


def _redis_binary(name: str) -> str:
    if name != "bundled" and shutil.which(name) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} must be installed in CI")
        pytest.skip(f"{name} not installed")
    return server_binary_for(name)


@pytest.fixture(scope="session", params=REDIS_SERVERS)
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh real Redis server, once per server kind."""
    with LocalRedisServer(_redis_binary(request.param)) as server:
        yield server.url


@pytest.fixture
def clean_voxmesh_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No VOXMESH_ variables from the developer's shell leak into settings built in the test."""
    for name in list(os.environ):
        if name.startswith("VOXMESH_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[Bus]:
    """A bus on a flushed database."""
    bus = Bus(redis_url)
    await bus.redis.flushdb()
    yield bus
    await bus.close()
