"""QueueWorker slot and ack bookkeeping on a fake queue: cancels before a job starts, aborts, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from shared.bus import Delivery, WorkQueue
from shared.schema import Cancel, Message, ReplyRequested
from shared.worker import QueueWorker

pytestmark = pytest.mark.unit


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, stream: str, message: Message) -> bytes:
        self.sent.append(message)
        return b"0-1"


class FakeQueue:
    """Hands out scripted deliveries one read at a time; records acks."""

    label = "fake"
    stream = "fake:stream"
    claim_idle_ms = 60_000

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.waiting = list(deliveries)
        self.acked: list[bytes] = []
        self.ack_seen = asyncio.Event()
        self.bus = FakeBus()
        self.read_calls = 0

    async def ensure_group(self) -> None:
        pass

    async def read(self, count: int = 1) -> list[Delivery]:
        self.read_calls += 1
        if not self.waiting:
            await asyncio.sleep(0.01)
            return []
        return [self.waiting.pop(0)]

    async def ack(self, entry_id: bytes) -> None:
        self.acked.append(entry_id)
        self.ack_seen.set()

    async def wait_acked(self, entry_id: bytes) -> None:
        while entry_id not in self.acked:
            self.ack_seen.clear()
            await self.ack_seen.wait()

    async def keep_alive(self, entry_ids: list[Any]) -> list[bytes]:
        return []

    async def trim(self) -> None:
        pass

    async def claim_stale(self, count: int = 10) -> list[Delivery]:
        return []


def delivery(n: int, turn: int = 0) -> Delivery:
    request = ReplyRequested(session_id="s", turn_id=turn, seq=0, text=f"q{n}", speech_ended_at=0)
    return Delivery(f"0-{n}".encode(), request)


async def test_a_job_cancelled_before_it_starts_frees_its_slot_and_acks_its_entry() -> None:
    handled: list[str] = []
    queue = FakeQueue([delivery(1, turn=0), delivery(2, turn=1)])
    worker: QueueWorker

    async def handler(message: Message) -> None:
        assert isinstance(message, ReplyRequested)
        handled.append(message.text)

    worker = QueueWorker(cast(WorkQueue, queue), handler, fence=None, concurrency=1)
    original_admit = worker._admit

    async def admit_then_cancel(item: Delivery, group: asyncio.TaskGroup) -> None:
        await original_admit(item, group)
        if item.message.turn_id == 0:
            # The cancel broadcast lands in the same loop step, before the job's first step.
            worker.on_cancel(Cancel(session_id="s", turn_id=1, seq=1))

    worker._admit = admit_then_cancel  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        await asyncio.wait_for(queue.wait_acked(b"0-2"), 5)
        stop.set()

    assert handled == ["q2"], "the cancelled job never ran and the next one got the only slot"
    assert sorted(queue.acked) == [b"0-1", b"0-2"]
    assert worker.in_flight == 0


async def test_shutdown_puts_a_running_job_back_and_an_aborted_one_is_acked() -> None:
    started = asyncio.Event()
    queue = FakeQueue([delivery(1)])

    async def handler(message: Message) -> None:
        started.set()
        await asyncio.sleep(60)

    worker = QueueWorker(cast(WorkQueue, queue), handler, fence=None, concurrency=1, grace_s=0.05)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        await asyncio.wait_for(started.wait(), 5)
        stop.set()
    assert [m.model_dump(exclude={"sent_at"}) for m in queue.bus.sent] == [
        delivery(1).message.model_dump(exclude={"sent_at"})
    ], "the unfinished job went back on the queue"
    assert queue.acked == [b"0-1"]

    queue = FakeQueue([delivery(2)])
    started.clear()
    worker = QueueWorker(cast(WorkQueue, queue), handler, fence=None, concurrency=1)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        await asyncio.wait_for(started.wait(), 5)
        worker.on_cancel(Cancel(session_id="s", turn_id=5, seq=5))
        await asyncio.wait_for(queue.wait_acked(b"0-2"), 5)
        stop.set()
    assert queue.acked == [b"0-2"] and queue.bus.sent == [], "an aborted job is done, not requeued"
