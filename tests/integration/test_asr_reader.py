"""The ASR replica's shared audio reader on a real Redis: one read loop serves many sessions, in order; a
session joining while the read blocks is served without waiting out the block; a closed session leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from services.asr import reader as reader_module
from services.asr.reader import AudioReader, Feed
from shared import keys
from shared.bus import Bus, Delivery
from shared.schema import AudioFrame, SessionClosed

pytestmark = pytest.mark.integration


@asynccontextmanager
async def _reading(bus: Bus) -> AsyncIterator[AudioReader]:
    reader = AudioReader(bus)
    task = asyncio.create_task(reader.run())
    try:
        yield reader
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _frame(session: str, seq: int) -> AudioFrame:
    return AudioFrame(session_id=session, turn_id=0, seq=seq, audio=seq.to_bytes(2, "little") * 160)


async def _collect(feed: Feed, want: int) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < want:
        deliveries = await feed.read()
        assert deliveries is not None
        seqs += [d.message.seq for d in deliveries if isinstance(d.message, AudioFrame)]
    return seqs


async def test_one_read_loop_serves_many_sessions_in_order(bus: Bus) -> None:
    sessions = [f"reader-many-{i}" for i in range(30)]
    frames = 120
    async with _reading(bus) as reader:
        feeds = [await reader.open(s, "0-0") for s in sessions]
        assert sorted(reader.sessions) == sorted(sessions)

        async def send(session: str) -> None:
            for seq in range(frames):
                await bus.send_to_session(keys.audio_in(session), _frame(session, seq))

        got = await asyncio.wait_for(
            asyncio.gather(*(send(s) for s in sessions), *(_collect(f, frames) for f in feeds)), timeout=60
        )
        for seqs in got[len(sessions) :]:
            assert seqs == list(range(frames))
        for feed in feeds:
            await feed.close()
        assert reader.sessions == []


async def test_a_backlog_over_one_read_arrives_whole_and_in_order(bus: Bus) -> None:
    session = "reader-backlog"
    total = reader_module.COUNT * 3 + 7
    for seq in range(total):
        await bus.send_to_session(keys.audio_in(session), _frame(session, seq))
    async with _reading(bus) as reader:
        feed = await reader.open(session, "0-0")
        assert await asyncio.wait_for(_collect(feed, total), timeout=60) == list(range(total))
        await feed.close()


async def test_a_session_joining_during_a_blocked_read_gets_its_frames_without_waiting_it_out(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A block far longer than the test's deadline: only the wake can deliver the frame in time.
    monkeypatch.setattr(reader_module, "BLOCK_MS", 600_000)
    async with _reading(bus) as reader:
        first = await reader.open("reader-first", "0-0")
        await bus.send_to_session(keys.audio_in("reader-first"), _frame("reader-first", 0))
        assert await asyncio.wait_for(_collect(first, 1), timeout=30) == [0]  # the read is blocked again now
        joined = await reader.open("reader-joined", "0-0")
        await bus.send_to_session(keys.audio_in("reader-joined"), _frame("reader-joined", 0))
        assert await asyncio.wait_for(_collect(joined, 1), timeout=30) == [0]
        await first.close()
        await joined.close()


async def test_a_closed_session_leaves_the_read_and_the_others_go_on(bus: Bus) -> None:
    async with _reading(bus) as reader:
        leaving = await reader.open("reader-leaving", "0-0")
        staying = await reader.open("reader-staying", "0-0")
        await bus.send_to_session(keys.audio_in("reader-leaving"), _frame("reader-leaving", 0))
        await bus.send_to_session(
            keys.audio_in("reader-leaving"), SessionClosed(session_id="reader-leaving", turn_id=0, seq=1)
        )
        seen: list[Delivery] = []
        while not any(isinstance(d.message, SessionClosed) for d in seen):
            deliveries = await asyncio.wait_for(leaving.read(), timeout=30)
            assert deliveries is not None
            seen += deliveries
        await leaving.close()
        assert reader.sessions == ["reader-staying"]
        await bus.send_to_session(keys.audio_in("reader-leaving"), _frame("reader-leaving", 2))
        for seq in range(3):
            await bus.send_to_session(keys.audio_in("reader-staying"), _frame("reader-staying", seq))
        assert await asyncio.wait_for(_collect(staying, 3), timeout=30) == [0, 1, 2]
        await staying.close()


async def test_resuming_from_a_checkpoint_reads_after_it(bus: Bus) -> None:
    session = "reader-resume"
    ids = [await bus.send_to_session(keys.audio_in(session), _frame(session, seq)) for seq in range(10)]
    async with _reading(bus) as reader:
        feed = await reader.open(session, ids[4])
        assert await asyncio.wait_for(_collect(feed, 5), timeout=30) == [5, 6, 7, 8, 9]
        await feed.close()
