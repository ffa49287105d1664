"""The bus on a real three-master Redis Cluster: work queues and one session's keys sit on different
nodes; scripts, pipelines, transactions, blocking reads and the cancel broadcast all work there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from shared import keys
from shared.bus import Bus, StreamTail, WorkQueue, is_cluster_url
from shared.history import HistoryEntry, append_history, load_history
from shared.redis_server import LocalRedisCluster
from shared.schema import AudioFrame, Cancel, ReplyRequested, encode_broadcast
from shared.turns import CancelListener, TurnFence, open_turn
from tests.eventually import eventually
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


def _cluster(bus: Bus) -> RedisCluster:
    """The bus's client, which a cluster URL makes redis-py's cluster client."""
    client: object = bus.redis
    assert isinstance(client, RedisCluster)
    return client


def _port_of(client: RedisCluster, key: str) -> int:
    """The port of the master that owns `key`."""
    node = client.get_node_from_key(key)
    assert node is not None
    return int(node.port)


def _request(session_id: str, turn_id: int) -> ReplyRequested:
    return ReplyRequested(session_id=session_id, turn_id=turn_id, seq=0, text="hi", speech_ended_at=0.0)


async def test_the_url_selects_the_cluster_client(cluster: LocalRedisCluster, bus: Bus) -> None:
    assert is_cluster_url(cluster.url) and not is_cluster_url("redis://127.0.0.1:6379/0")
    client = _cluster(bus)
    assert await bus.ping()
    queues = {_port_of(client, key) for key in (keys.ASR_DISPATCH, keys.LLM_REQUESTS, keys.TTS_REQUESTS)}
    assert len(queues) == 3, "each work queue on its own master"
    assert len({key_slot(key.encode()) for key in keys.session_keys("abc")}) == 1, "a session: one slot"


async def test_work_queue_with_leases_claims_and_dead_letters(bus: Bus) -> None:
    queue = WorkQueue(bus, keys.LLM_REQUESTS, keys.LLM_GROUP, "c1", label="test", block_ms=200,
                      claim_idle_ms=1000, retention_s=300.0)  # fmt: skip
    other = WorkQueue(bus, keys.LLM_REQUESTS, keys.LLM_GROUP, "c2", label="test", block_ms=200,
                      claim_idle_ms=1000)  # fmt: skip
    try:
        await queue.ensure_group()
        await queue.ensure_group()  # BUSYGROUP is fine
        await bus.send(keys.LLM_REQUESTS, _request("q1", 1))
        [delivery] = await queue.read()
        assert (delivery.message.session_id, delivery.message.turn_id) == ("q1", 1)
        assert await queue.keep_alive([delivery.entry_id]) == []  # the lease script, on the queue's node
        await asyncio.sleep(1.1)
        [taken] = await other.claim_stale()
        assert taken.entry_id == delivery.entry_id
        assert await queue.keep_alive([delivery.entry_id]) == [delivery.entry_id], "lost to c2"
        await other.dead_letter(taken, "test")
        await queue.trim()
        assert await bus.redis.xlen(keys.DEAD_LETTERS) >= 1
        assert await other.claim_stale() == []
    finally:
        await queue.close()
        await other.close()


async def test_session_streams_pipelines_and_history(bus: Bus) -> None:
    session = "cluster-session"
    await bus.redis.set(keys.turn_counter(session), 0)
    sent = [AudioFrame(session_id=session, turn_id=0, seq=seq, audio=bytes([seq]) * 640) for seq in range(5)]
    for frame in sent:
        await bus.send_to_session(keys.audio_in(session), frame)
    tail = StreamTail(bus, keys.audio_in(session), label="test", block_ms=200)
    try:
        got = [d.message for d in await tail.read()]
    finally:
        await tail.close()
    assert [m.seq for m in got] == [0, 1, 2, 3, 4]
    assert await bus.redis.ttl(keys.audio_in(session)) > 0
    entries = [
        HistoryEntry(role="user", text="hi", turn_id=1),
        HistoryEntry(role="assistant", text="yo", turn_id=1),
    ]
    await append_history(bus.redis, session, entries)  # a MULTI/EXEC on the session's slot
    assert await load_history(bus.redis, session) == entries
    # A pipeline across slots (a work queue and a session stream), as the LLM sends each phrase.
    async with bus.redis.pipeline(transaction=False) as pipe:
        pipe.xadd(keys.ASR_DISPATCH, {b"x": b"1"})
        pipe.xadd(keys.session_out(session), {b"x": b"2"})
        first, second = await pipe.execute()
    assert first and second


async def test_turns_and_cancels_reach_listeners_on_every_node(cluster: LocalRedisCluster, bus: Bus) -> None:
    fence = TurnFence(bus.redis)
    heard: list[int] = []
    listener = CancelListener(bus, fence, lambda cancel: heard.append(cancel.turn_id))
    sender = Bus(f"redis+cluster://127.0.0.1:{cluster.ports[2]}")  # any node will do as the address
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.subscribed.wait(), timeout=5)
        sessions = [f"turns-{i}" for i in range(6)]  # their counters sit on different nodes
        for session in sessions:
            assert await open_turn(sender.redis, session) == 1
            assert await open_turn(sender.redis, session, above=4) == 5
        await eventually(lambda: len(heard) == 2 * len(sessions))
        assert all(fence.latest(session) == 5 for session in sessions)
        assert await TurnFence(bus.redis).check_stale(sessions[0], 4)
        # A PUBLISH on a node that does not own the channel's slot reaches the listener all the same:
        # Redis Cluster broadcasts plain pub/sub over its bus.
        owner = _port_of(_cluster(bus), keys.CANCEL_CHANNEL)
        elsewhere = next(port for port in cluster.ports if port != owner)
        async with Redis(port=elsewhere) as plain:
            cancel = Cancel(session_id=sessions[0], turn_id=9, seq=9)
            await plain.publish(keys.CANCEL_CHANNEL, encode_broadcast(cancel))
        await eventually(lambda: fence.latest(sessions[0]) == 9)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.close()
