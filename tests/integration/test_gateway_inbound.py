"""The gateway's client → ASR writer on a real Redis: frames queued while a write is out go together, in
order; a full queue refuses (never drops silently); flush waits for everything queued."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.inbound import Inbound
from shared import keys
from shared.bus import Bus, StreamTail
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
