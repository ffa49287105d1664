"""The loop every worker service runs: take entries from a work queue, run each as an owned task,
drop stale turns, keep leases alive, take over dead replicas' work, and shut down without loss."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from shared import keys
from shared.bus import Bus, Delivery, WorkQueue
from shared.metrics import CANCEL_STOP_SECONDS, HANDLER_ERRORS, JOBS_ABORTED, MESSAGES_DROPPED
from shared.schema import Cancel, Message, ServiceError
from shared.turns import CancelListener, TurnFence

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]
FailureHandler = Callable[[Message], Awaitable[None]]
"""Told the message whose handler kept failing, after it was dead-lettered: lets the user know."""

_RETRY_BACKOFF_S = 0.2


def tell_session(bus: Bus, code: str, text: str) -> FailureHandler:
    """A failure handler that sends the message's session a ServiceError (an `error` event for the user)."""

    async def tell(message: Message) -> None:
        error = ServiceError(
            session_id=message.session_id, turn_id=message.turn_id, seq=0, code=code, message=text
        )
        await bus.send_to_session(keys.session_out(message.session_id), error)

    return tell


class _Job:
    __slots__ = ("aborted_at", "delivery", "lost", "task")

    def __init__(self, delivery: Delivery, task: asyncio.Task[None]) -> None:
        self.delivery = delivery
        self.task = task
        self.aborted_at: float | None = None
        """Wall-clock time the cancel that aborted this job was sent, once aborted."""
        self.lost = False
        """Another replica took the entry over: it finishes the work, this one stops without a trace."""


class QueueWorker:
    """Runs `handler` for each entry of `queue`, at most `concurrency` at once.

    An entry is acked when its handler finishes or is aborted because its turn went stale. A failing
    handler is run again up to `retries` times; then the entry is dead-lettered with its payload and
    `on_failure` is told. On shutdown, handlers get `grace_s` to finish; any still running are cancelled
    and their entries put back on the queue for another replica (an abort is told apart from a shutdown).
    """

    def __init__(
        self,
        queue: WorkQueue,
        handler: Handler,
        *,
        fence: TurnFence | None,
        concurrency: int = 1,
        grace_s: float = 10.0,
        retries: int = 3,
        on_failure: FailureHandler | None = None,
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.fence = fence
        self.retries = retries
        self.on_failure = on_failure
        self.concurrency = concurrency
        self.grace_s = grace_s
        self._jobs: dict[bytes, _Job] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._followups: set[asyncio.Task[None]] = set()
        self._claim_due = 0.0  # monotonic time of the next look for dead replicas' entries
        self._group_ready = False
        self._redis_failures = 0

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
        """Work until `stop` is set, then drain. Redis going away pauses the loop; it never ends it."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._leases(stop))
            try:
                while not stop.is_set():
                    if not await self._take_slot():
                        continue
                    admitted = False
                    try:
                        delivery = await self._next()
                        admitted = delivery is not None and await self._admit(delivery, group)
                        self._redis_failures = 0
                    except (RedisError, OSError) as exc:
                        await self._wait_for_redis(exc, stop)
                    finally:
                        if not admitted:
                            self._slots.release()
            finally:
                await self._drain()

    async def _take_slot(self) -> bool:
        # Bounded wait, so a full worker still notices `stop`.
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=0.5)
        except TimeoutError:
            return False
        return True

    async def _next(self) -> Delivery | None:
        """Work for the slot just taken: an entry of a dead replica when it is time to look, else a new one.

        Claiming here, with a slot in hand, rather than in the lease loop: that loop must never wait for a
        slot, or the leases of running jobs lapse and other replicas take over live work."""
        if not self._group_ready:
            await self.queue.ensure_group()
            self._group_ready = True
        if time.monotonic() >= self._claim_due:
            claimed = await self.queue.claim_stale(count=1)
            # More may be waiting right behind a claimed one; otherwise look again in a lease interval.
            self._claim_due = 0.0 if claimed else time.monotonic() + self._lease_interval_s
            if claimed:
                return claimed[0]
        deliveries = await self.queue.read(count=1)
        return deliveries[0] if deliveries else None

    async def _wait_for_redis(self, exc: Exception, stop: asyncio.Event) -> None:
        """Back off after a failed read (redis-py already retried it); a restarted Redis has lost the
        group, so it is created again before the next read."""
        if "NOGROUP" in str(exc):
            self._group_ready = False
        self._redis_failures += 1
        delay = min(2.0, 0.05 * 2**self._redis_failures)
        log.warning(
            "redis unavailable, retrying",
            extra={"stream": self.queue.stream, "error": str(exc), "in_s": delay},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)

    @property
    def _lease_interval_s(self) -> float:
        return self.queue.claim_idle_ms / 3000

    async def _admit(self, delivery: Delivery, group: asyncio.TaskGroup) -> bool:
        """Start the delivery's job (which then owns the slot taken for it); False if it was stale."""
        message = delivery.message
        if self.fence is not None and await self.fence.check_stale(message.session_id, message.turn_id):
            MESSAGES_DROPPED.labels(reason="stale_turn").inc()
            await self.queue.ack(delivery.entry_id)
            return False
        task = group.create_task(self._run(delivery))
        job = _Job(delivery, task)
        self._jobs[delivery.entry_id] = job
        # A done callback, not a `finally` in _run: a task cancelled before its first step never runs its
        # body, and its slot and queue entry must be released all the same.
        task.add_done_callback(lambda done: self._settle(job, done))
        return True

    async def _run(self, delivery: Delivery) -> None:
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(_RETRY_BACKOFF_S * 2 ** (attempt - 1))
            try:
                await self.handler(delivery.message)
                return
            except Exception:
                HANDLER_ERRORS.labels(queue=self.queue.label).inc()
                log.exception("handler failed", extra={"stream": self.queue.stream, "attempt": attempt + 1})
        # A poison message: it must not take this slot forever, and its sender must hear of it.
        MESSAGES_DROPPED.labels(reason="handler_failed").inc()
        try:
            await self.queue.dead_letter(delivery, "handler_failed")
            if self.on_failure is not None:
                await self.on_failure(delivery.message)
        except Exception:
            log.exception("dead-lettering failed", extra={"stream": self.queue.stream})

    def _settle(self, job: _Job, task: asyncio.Task[None]) -> None:
        """Free the job's slot, then ack its entry, or put it back when shutdown (not a cancel) stopped it."""
        self._jobs.pop(job.delivery.entry_id, None)
        self._slots.release()
        if job.lost:
            return  # the entry is another replica's now: it acks it
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

    async def _leases(self, stop: asyncio.Event) -> None:
        """Keep our entries from looking abandoned; stop jobs whose entry another replica took over."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._lease_interval_s)
            try:
                lost = await self.queue.keep_alive(list(self._jobs))
                await self.queue.trim()
            except Exception as exc:
                log.warning("lease upkeep failed", extra={"stream": self.queue.stream, "error": str(exc)})
                continue
            for entry_id in lost:
                if (job := self._jobs.get(entry_id)) is not None:
                    log.warning(
                        "lease lost to another replica, stopping", extra={"stream": self.queue.stream}
                    )
                    job.lost = True
                    job.task.cancel()

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
    on_failure: FailureHandler | None = None,
) -> None:
    """Run a QueueWorker whose running jobs are aborted by cancel broadcasts for their session."""
    fence = TurnFence(queue.bus.redis)
    worker = QueueWorker(
        queue, handler, fence=fence, concurrency=concurrency, grace_s=grace_s, on_failure=on_failure
    )
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
