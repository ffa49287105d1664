"""The gateway's client → ASR writer on a real Redis: frames queued while a write is out go together, in
order; a full queue refuses (never drops silently); flush waits for everything queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import RedisError

from services.gateway.inbound import Inbound, InboundWriter
from shared import keys
from shared.bus import Bus, StreamTail
from shared.redis_server import LocalRedisServer
from shared.schema import AudioFrame, SessionClosed

pytestmark = pytest.mark.integration


def _frame(session: str, seq: int) -> AudioFrame:
    return AudioFrame(session_id=session, turn_id=0, seq=seq, audio=b"\x00\x01" * 160)


async def _seqs(bus: Bus, session: str) -> list[int]:
    tail = StreamTail(bus, keys.audio_in(session), label="test", block_ms=10)
    seqs: list[int] = []
    try:
        while deliveries := await tail.read():
            seqs += [d.message.seq for d in deliveries]
    finally:
        await tail.close()
    return seqs


async def test_queued_frames_reach_the_stream_in_order_and_flush_waits_for_them(bus: Bus) -> None:
    session = "inbound-order"
    inbound = Inbound(bus, keys.audio_in(session))
    writer = asyncio.create_task(inbound.run())
    try:
        for seq in range(300):
            assert inbound.put(_frame(session, seq))
            if seq % 7 == 0:
                await asyncio.sleep(0)  # the writer takes what has accumulated so far
        assert inbound.put(SessionClosed(session_id=session, turn_id=0, seq=300))
        await asyncio.wait_for(inbound.flush(), timeout=30)
        assert await _seqs(bus, session) == list(range(301))
        assert await bus.redis.ttl(keys.audio_in(session)) > 0
    finally:
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer


async def test_a_full_queue_refuses_the_frame(bus: Bus) -> None:
    session = "inbound-full"
    inbound = Inbound(bus, keys.audio_in(session), limit=3)  # no writer: nothing drains it
    assert all(inbound.put(_frame(session, seq)) for seq in range(3))
    assert not inbound.put(_frame(session, 3))
    writer = asyncio.create_task(inbound.run())
    try:
        await asyncio.wait_for(inbound.flush(), timeout=30)
        assert await _seqs(bus, session) == [0, 1, 2]
        assert inbound.put(_frame(session, 3))  # room again
    finally:
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer


async def test_sessions_sharing_a_writer_keep_their_order_and_share_round_trips(bus: Bus) -> None:
    shared = InboundWriter(bus)
    sessions = [f"inbound-shared-{i}" for i in range(20)]
    inbounds = [Inbound(bus, keys.audio_in(s), writer=shared) for s in sessions]
    trips = 0
    pipeline = bus.redis.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return pipeline(*args, **kwargs)

    bus.redis.pipeline = counting_pipeline  # type: ignore[method-assign]
    runs = [asyncio.create_task(inbound.run()) for inbound in inbounds]
    try:
        for seq in range(50):
            for session, inbound in zip(sessions, inbounds, strict=True):
                assert inbound.put(_frame(session, seq))
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*(inbound.flush() for inbound in inbounds)), timeout=30)
        for session in sessions:
            assert await _seqs(bus, session) == list(range(50))
            assert await bus.redis.ttl(keys.audio_in(session)) > 0
        assert trips <= 60, f"{trips} round trips for 1000 frames of 20 sessions"
    finally:
        del bus.redis.pipeline
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await shared.close()


async def test_a_failed_write_ends_the_sessions_it_carried() -> None:
    server = LocalRedisServer()
    server.start()
    dead = Bus(server.url)
    shared = InboundWriter(dead)
    inbound = Inbound(dead, keys.audio_in("inbound-dead"), writer=shared)
    run = asyncio.create_task(inbound.run())
    try:
        assert inbound.put(_frame("inbound-dead", 0))
        await asyncio.wait_for(inbound.flush(), timeout=10)  # written
        server.stop()
        assert inbound.put(_frame("inbound-dead", 1))
        with pytest.raises((RedisError, OSError)):
            await asyncio.wait_for(run, timeout=30)
        await asyncio.wait_for(inbound.flush(), timeout=5)  # nobody waits forever on a lost write
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await shared.close()
        await dead.close()
        server.stop()
