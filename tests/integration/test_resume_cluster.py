"""Resuming on a real three-master Redis Cluster: the session's record, its claim script and its deletion
at expiry touch one session's hash-tagged keys only, so they work where those keys live."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from services.gateway.settings import GatewaySettings
from shared import keys
from shared.bus import Bus
from shared.redis_server import LocalRedisCluster
from tests.eventually import eventually
from tests.gateway_support import serving
from tests.live_session import live_session
from tests.mesh_support import fake_asr
from tests.ports import free_port_run
from tests.redis_cluster import running_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with running_cluster() as running:
        yield running


@pytest.fixture
async def bus(cluster: LocalRedisCluster) -> AsyncIterator[Bus]:
    bus = Bus(cluster.url)
    yield bus
    await bus.close()


async def _left(bus: Bus, session_id: str) -> list[str]:
    return [key for key in keys.session_keys(session_id) if await bus.redis.exists(key)]


async def _gone(bus: Bus, session_id: str) -> bool:
    return not await _left(bus, session_id)


async def test_a_session_is_resumed_and_expires_on_redis_cluster(bus: Bus) -> None:
    settings = GatewaySettings(
        http_host="127.0.0.1", http_port=free_port_run(), auth="off", resume_window_s=1.0
    )
    url = f"ws://127.0.0.1:{settings.http_port}/v1/realtime"
    async with serving(settings, bus, drain_s=2.0), fake_asr(bus):
        async with live_session(url, ["voxmesh"]) as first:
            started = first.of("session.started")[0]
            first.ws.transport.abort()
        sid = started["session_id"]
        await eventually(lambda: bus.redis.hexists(keys.session_record(sid), "parked"), 10)
        async with live_session(url, ["voxmesh", f"resume.{started['resume']}"]) as second:
            again = second.of("session.started")[0]
            assert again["session_id"] == sid and again["resumed"] is True
            assert await _left(bus, sid), "it has keys while it lives"
            second.ws.transport.abort()
        # Expired after its window (the stand-in ASR never lets go: the gateway waits for it 10 s at most).
        await eventually(lambda: _gone(bus, sid), 30)
