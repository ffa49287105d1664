"""The loop every worker service runs: take entries from a work queue, run each as an owned task,
drop stale turns, keep leases alive, take over dead replicas' work, and shut down without loss."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from shared.bus import Delivery, WorkQueue
from shared.metrics import CANCEL_STOP_SECONDS, HANDLER_ERRORS, JOBS_ABORTED, MESSAGES_DROPPED
from shared.schema import Cancel, Message
from shared.turns import CancelListener, TurnFence

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]


class _Job:
    __slots__ = ("aborted_at", "delivery", "task")

    def __init__(self, delivery: Delivery, task: asyncio.Task[None]) -> None:
        self.delivery = delivery
        self.task = task
        self.aborted_at: float | None = None
        """Wall-clock time the cancel that aborted this job was sent, once aborted."""


class QueueWorker:
    """Runs `handler` for each entry of `queue`, at most `concurrency` at once.

    An entry is acked when its handler finishes, fails, or is aborted because its turn went stale.
    On shutdown, handlers get `grace_s` to finish; any still running are cancelled and their entries
    put back on the queue for another replica (an abort is told apart from a shutdown).
    """

    def __init__(
        self,
        queue: WorkQueue,
        handler: Handler,
        *,
        fence: TurnFence | None,
        concurrency: int = 1,
        grace_s: float = 10.0,
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.fence = fence
        self.concurrency = concurrency
        self.grace_s = grace_s
        self._jobs: dict[bytes, _Job] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._followups: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """How many handlers are running."""
        return len(self._jobs)

    def on_cancel(self, cancel: Cancel) -> None:
        """Abort running handlers of the session's older turns (hooked to the cancel listener)."""
        for job in list(self._jobs.values()):
            message = job.delivery.message
            if message.session_id == cancel.session_id and message.turn_id < cancel.turn_id:
                if job.aborted_at is None:
                    job.aborted_at = cancel.sent_at
                job.task.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then drain."""
        await self.queue.ensure_group()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._leases(stop, group))
            try:
                while not stop.is_set():
                    if not await self._take_slot():
                        continue
                    try:
                        deliveries = await self.queue.read(count=1)
                    except BaseException:
                        self._slots.release()
                        raise
                    if not deliveries:
                        self._slots.release()
                        continue
                    await self._admit(deliveries[0], group)
            finally:
                await self._drain()

    async def _take_slot(self) -> bool:
        # Bounded wait, so a full worker still notices `stop`.
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=0.5)
        except TimeoutError:
            return False
        return True

    async def _admit(self, delivery: Delivery, group: asyncio.TaskGroup) -> None:
        message = delivery.message
        if self.fence is not None and await self.fence.check_stale(message.session_id, message.turn_id):
            MESSAGES_DROPPED.labels(reason="stale_turn").inc()
            await self.queue.ack(delivery.entry_id)
            self._slots.release()
            return
        task = group.create_task(self._run(delivery))
        job = _Job(delivery, task)
        self._jobs[delivery.entry_id] = job
        # A done callback, not a `finally` in _run: a task cancelled before its first step never runs its
        # body, and its slot and queue entry must be released all the same.
        task.add_done_callback(lambda done: self._settle(job, done))

    async def _run(self, delivery: Delivery) -> None:
        try:
            await self.handler(delivery.message)
        except Exception:
            HANDLER_ERRORS.labels(queue=self.queue.label).inc()
            log.exception("handler failed", extra={"stream": self.queue.stream})

    def _settle(self, job: _Job, task: asyncio.Task[None]) -> None:
        """Free the job's slot, then ack its entry, or put it back when shutdown (not a cancel) stopped it."""
        self._jobs.pop(job.delivery.entry_id, None)
        self._slots.release()
        if task.cancelled() and job.aborted_at is None:
            self._follow_up(self._requeue(job.delivery))  # shutdown: someone else finishes it
            return
        if task.cancelled() and job.aborted_at is not None:
            JOBS_ABORTED.labels(queue=self.queue.label).inc()
            CANCEL_STOP_SECONDS.labels(queue=self.queue.label).observe(max(0.0, time.time() - job.aborted_at))
        self._follow_up(self.queue.ack(job.delivery.entry_id))

    def _follow_up(self, step: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._logged(step))
        self._followups.add(task)
        task.add_done_callback(self._followups.discard)

    async def _logged(self, step: Coroutine[Any, Any, Any]) -> None:
        try:
            await step
        except Exception:
            log.exception("ack or requeue failed", extra={"stream": self.queue.stream})

    async def _requeue(self, delivery: Delivery) -> None:
        await self.queue.bus.send(self.queue.stream, delivery.message)
        await self.queue.ack(delivery.entry_id)

    async def _leases(self, stop: asyncio.Event, group: asyncio.TaskGroup) -> None:
        """Keep our entries from looking abandoned, and adopt entries whose consumer died."""
        interval = self.queue.claim_idle_ms / 3000
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            try:
                await self.queue.keep_alive(list(self._jobs))
                if not stop.is_set() and self.in_flight < self.concurrency:
                    for delivery in await self.queue.claim_stale(count=self.concurrency - self.in_flight):
                        await self._slots.acquire()
                        await self._admit(delivery, group)
            except Exception:
                log.exception("lease upkeep failed", extra={"stream": self.queue.stream})

    async def _drain(self) -> None:
        jobs = [job.task for job in self._jobs.values()]
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=self.grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # Done callbacks run on the next loop step; then their acks and requeues must land before exit.
        await asyncio.sleep(0)
        while self._followups:
            await asyncio.gather(*list(self._followups), return_exceptions=True)


async def serve_fenced_queue(
    queue: WorkQueue,
    handler: Handler,
    stop: asyncio.Event,
    *,
    concurrency: int,
    grace_s: float,
) -> None:
    """Run a QueueWorker whose running jobs are aborted by cancel broadcasts for their session."""
    fence = TurnFence(queue.bus.redis)
    worker = QueueWorker(queue, handler, fence=fence, concurrency=concurrency, grace_s=grace_s)
    listener = CancelListener(queue.bus, fence, worker.on_cancel)
    try:
        async with asyncio.TaskGroup() as group:
            listening = group.create_task(listener.run())
            # Take no work before cancels can be heard: a job started meanwhile would miss its cancel.
            subscribed = group.create_task(listener.subscribed.wait())
            stopping = group.create_task(stop.wait())
            await asyncio.wait({subscribed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            subscribed.cancel()
            stopping.cancel()
            await worker.run(stop)
            listening.cancel()
    finally:
        await queue.close()
