"""Which Redis client a URL gets: the cluster client for `redis+cluster://`, the plain one otherwise."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import SSLConnection

from shared.bus import Bus, connect, is_cluster_url

pytestmark = pytest.mark.unit


async def test_the_scheme_selects_the_client() -> None:
    assert is_cluster_url("redis+cluster://10.0.0.1:6379") and is_cluster_url("REDISS+CLUSTER://h:1")
    assert not is_cluster_url("redis://127.0.0.1:6379/0") and not is_cluster_url("rediss://h:6380")
    plain, cluster = connect("redis://127.0.0.1:6379/0"), connect("redis+cluster://u:pw@127.0.0.1:7000/0")
    tls = connect("rediss+cluster://127.0.0.1:7000")
    try:
        assert type(plain) is Redis and isinstance(cluster, RedisCluster) and isinstance(tls, RedisCluster)
        assert cluster.connection_kwargs["username"] == "u" and cluster.connection_kwargs["password"] == "pw"
        assert tls.connection_kwargs["connection_class"] is SSLConnection
        assert [(n.host, n.port) for n in cluster.nodes_manager.startup_nodes.values()] == [
            ("127.0.0.1", 7000)
        ]
    finally:
        for client in (plain, cluster, tls):
            await client.aclose()


async def test_blocking_readers_never_time_out() -> None:
    bus = Bus("redis+cluster://127.0.0.1:7000")
    reader = bus.blocking_client()
    plain = Bus("redis://127.0.0.1:6379/0").blocking_client()
    try:
        assert isinstance(reader, RedisCluster) and reader is not bus.redis
        assert reader.connection_kwargs["socket_timeout"] is None
        assert isinstance(bus.redis, RedisCluster) and bus.redis.connection_kwargs.get("socket_timeout") != 0
        assert plain.connection_pool.connection_kwargs["socket_timeout"] is None
        assert plain.single_connection_client
    finally:
        await reader.aclose()
        await plain.aclose()
        await bus.close()
