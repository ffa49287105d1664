"""The bus on a real Redis (bundled 6.2 and Debian 7.x): order, failover, cancel, stale turns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from shared import keys
from shared.bus import Bus, StreamTail, WorkQueue
from shared.schema import AudioFrame, Cancel, Message, ReplyRequested, SessionClosed, SessionOpened
from shared.turns import CancelListener, TurnFence, open_turn
from shared.worker import QueueWorker

pytestmark = pytest.mark.integration

STREAM = "vm:test:work"
GROUP = "workers"


def _request(session_id: str, turn_id: int, seq: int = 0) -> ReplyRequested:
    return ReplyRequested(session_id=session_id, turn_id=turn_id, seq=seq, text="hi", speech_ended_at=0.0)


@asynccontextmanager
async def running(
    bus: Bus,
    handler: Callable[[Message], Awaitable[None]],
    *,
    consumer: str,
    fence: TurnFence | None = None,
    concurrency: int = 1,
    claim_idle_ms: int = 15_000,
    grace_s: float = 5.0,
    block_ms: int = 100,
    retention_s: float | None = None,
) -> AsyncIterator[QueueWorker]:
    """A QueueWorker running in the background until the block ends."""
    queue = WorkQueue(
        bus, STREAM, GROUP, consumer, label="test", block_ms=block_ms, claim_idle_ms=claim_idle_ms,
        retention_s=retention_s,
    )  # fmt: skip
    worker = QueueWorker(queue, handler, fence=fence, concurrency=concurrency, grace_s=grace_s)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await queue.close()


async def _eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_per_session_order_kept_with_two_consumers(bus: Bus) -> None:
    sessions = [f"s{i}" for i in range(4)]
    frames_per_session = 150
    for sid in sessions:
        await bus.send(STREAM, SessionOpened(session_id=sid, turn_id=0, seq=0))
        for seq in range(frames_per_session):
            frame = AudioFrame(session_id=sid, turn_id=0, seq=seq, audio=seq.to_bytes(2, "little"))
            await bus.send_to_session(keys.audio_in(sid), frame)
        await bus.send_to_session(keys.audio_in(sid), SessionClosed(session_id=sid, turn_id=0, seq=0))

    seen: dict[str, list[int]] = defaultdict(list)
    owners: dict[str, str] = {}

    def owner_of(name: str) -> Callable[[Message], Awaitable[None]]:
        async def own_session(message: Message) -> None:
            owners[message.session_id] = name
            tail = StreamTail(bus, keys.audio_in(message.session_id), label="test", block_ms=100)
            try:
                while True:
                    for delivery in await tail.read(count=7):
                        if isinstance(delivery.message, SessionClosed):
                            return
                        assert isinstance(delivery.message, AudioFrame)
                        seen[message.session_id].append(int.from_bytes(delivery.message.audio, "little"))
                        await asyncio.sleep(0)  # interleave the two consumers
            finally:
                await tail.close()

        return own_session

    async with (
        running(bus, owner_of("a"), consumer="a", concurrency=2),
        running(bus, owner_of("b"), consumer="b", concurrency=2),
    ):
        await _eventually(lambda: all(len(seen[s]) == frames_per_session for s in sessions))

    assert set(owners.values()) == {"a", "b"}, "both consumers should have owned sessions"
    for sid in sessions:
        assert seen[sid] == list(range(frames_per_session))


_DOOMED_CONSUMER = """
import asyncio, sys
from shared.bus import Bus, WorkQueue
async def main():
    bus = Bus(sys.argv[1])
    queue = WorkQueue(bus, sys.argv[2], sys.argv[3], "doomed", label="test")
    await queue.ensure_group()
    got = []
    while len(got) < 3:
        got += await queue.read(count=3)
    print("read", len(got), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_killed_consumer_pending_entries_are_taken_over(bus: Bus, redis_url: str) -> None:
    for seq in range(3):
        await bus.send(STREAM, _request("s1", 0, seq))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED_CONSUMER, redis_url, STREAM, GROUP, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.strip() == b"read 3"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    pending = await bus.redis.xpending(STREAM, GROUP)
    assert pending["pending"] == 3

    handled: list[int] = []

    async def handle(message: Message) -> None:
        handled.append(message.seq)

    async with running(bus, handle, consumer="survivor", claim_idle_ms=1000):
        await _eventually(lambda: len(handled) == 3)
    assert sorted(handled) == [0, 1, 2]
    assert (await bus.redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_cancel_reaches_every_replica(bus: Bus) -> None:
    heard: dict[int, list[Cancel]] = defaultdict(list)
    fences = [TurnFence(bus.redis) for _ in range(3)]

    def recorder(index: int) -> Callable[[Cancel], None]:
        return heard[index].append

    listeners = [CancelListener(bus, fence, recorder(i)) for i, fence in enumerate(fences)]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(listener.run()) for listener in listeners]
        for listener in listeners:
            await asyncio.wait_for(listener.subscribed.wait(), timeout=5)
        turn = await open_turn(bus.redis, "s1")
        await _eventually(lambda: all(len(heard[i]) == 1 for i in range(3)))
        for task in tasks:
            task.cancel()
    assert all(heard[i][0].turn_id == turn == 1 for i in range(3))
    assert all(fence.is_stale("s1", 0) and not fence.is_stale("s1", 1) for fence in fences)


async def test_stale_turn_messages_are_dropped(bus: Bus) -> None:
    await open_turn(bus.redis, "s1")
    await open_turn(bus.redis, "s1")  # the session is now at turn 2
    await bus.send(STREAM, _request("s1", 1))
    await bus.send(STREAM, _request("s1", 2))
    handled: list[int] = []

    async def handle(message: Message) -> None:
        handled.append(message.turn_id)

    async with running(bus, handle, consumer="c", fence=TurnFence(bus.redis)):
        await _eventually(lambda: handled == [2])
    assert handled == [2]
    assert (await bus.redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_running_work_of_an_older_turn_is_aborted_and_acked(bus: Bus) -> None:
    fence = TurnFence(bus.redis)
    started = asyncio.Event()
    outcome: list[str] = []

    async def handle(message: Message) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async with running(bus, handle, consumer="c", fence=fence) as worker:
        listener = CancelListener(bus, fence, worker.on_cancel)
        async with asyncio.TaskGroup() as group:
            listen = group.create_task(listener.run())
            await asyncio.wait_for(listener.subscribed.wait(), timeout=5)
            await bus.send(STREAM, _request("s1", 0))
            await asyncio.wait_for(started.wait(), timeout=5)
            await open_turn(bus.redis, "s1")
            await _eventually(lambda: outcome == ["cancelled"] and worker.in_flight == 0)
            listen.cancel()
    assert (await bus.redis.xpending(STREAM, GROUP))["pending"] == 0
    assert await bus.redis.xlen(STREAM) == 1, "an aborted turn must not be requeued"


async def test_shutdown_puts_unfinished_work_back(bus: Bus) -> None:
    started = asyncio.Event()

    async def handle(message: Message) -> None:
        started.set()
        await asyncio.sleep(30)

    async with running(bus, handle, consumer="c", grace_s=0.2):
        await bus.send(STREAM, _request("s1", 0, seq=7))
        await asyncio.wait_for(started.wait(), timeout=5)
    assert (await bus.redis.xpending(STREAM, GROUP))["pending"] == 0
    entries = await bus.redis.xrange(STREAM)
    assert entries is not None and len(entries) == 2, "the unfinished entry is put back for another replica"


async def test_a_cancel_landing_as_a_command_finishes_is_never_swallowed(bus: Bus) -> None:
    """redis-py's writes go through asyncio.wait_for, which on Python 3.11 can return normally when a cancel
    arrives as the write completes; a worker's handler would then go on speaking a stale reply. Cancels are
    sent at every point of a busy send loop: each must end the task."""
    message = Cancel(session_id="s", turn_id=1, seq=1)
    swallowed = 0

    async def speak() -> None:
        nonlocal swallowed
        while True:
            await bus.send_to_session("cancel-race", message)
            await bus.send("cancel-race-queue", message)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                swallowed += 1  # a cancel was requested and this loop went on anyway
                return

    for attempt in range(300):
        task = asyncio.create_task(speak())
        for _ in range(attempt % 13):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert swallowed == 0, f"{swallowed} of 300 cancels were swallowed"
