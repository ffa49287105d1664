"""The one bridge from a blocking model loop in a worker thread to an async iterator on the event loop.

The worker gets `emit` (hand an item to the loop) and `stop` (set when the consumer is done, cancelled or
gone: check it between steps). The iterator yields items in order, then re-raises the worker's error, if
any. However the consumer leaves, it waits until the worker has returned, so the model is idle before
the next job starts and nothing runs on in the background. With `max_pending`, `emit` blocks while that
many items wait unread: a consumer that stops reading pauses the model and frees its core.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Done:
    """Queue marker: the worker has returned (or raised); its future holds the outcome."""


_DONE = _Done()


async def stream_from_thread(
    executor: Executor,
    produce: Callable[[Callable[[T], None], threading.Event], R],
    outcome: Callable[[R], None] | None = None,
    *,
    max_pending: int | None = None,
) -> AsyncGenerator[T, None]:
    """Run `produce(emit, stop)` on `executor` and yield what it emits.

    `outcome`, if given, sees the worker's return value once it has finished normally (e.g. to raise when
    it stopped for a reason other than the consumer leaving). `max_pending` bounds the items emitted but
    not yet read (None: unbounded).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | _Done] = asyncio.Queue()
    stop = threading.Event()
    # Back-pressure: a slot per unread item; the worker waits for one, the consumer frees one per item read.
    slots = threading.Semaphore(max_pending) if max_pending is not None else None

    def emit(item: T) -> None:
        # Runs in the worker; once the consumer is gone its loop may be closed too.
        if slots is not None:
            slots.acquire()
        if stop.is_set():
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:
            stop.set()

    future = loop.run_in_executor(executor, produce, emit, stop)
    # Items were queued via call_soon_threadsafe before the future resolves, so the marker comes last.
    future.add_done_callback(lambda _: queue.put_nowait(_DONE))
    try:
        while not isinstance(item := await queue.get(), _Done):
            if slots is not None:
                slots.release()
            yield item
        if future.cancelled():
            # Not CancelledError: that would read as the consumer's own task being cancelled.
            raise RuntimeError("the worker was shut down while streaming")
        result = future.result()  # re-raises the worker's error here, in the consumer
        if outcome is not None:
            outcome(result)
    finally:
        stop.set()
        if slots is not None and max_pending is not None:
            slots.release(max_pending)  # a worker waiting for a slot wakes, sees `stop` and returns
        await _wait_done(future)


async def _wait_done(future: asyncio.Future[R]) -> None:
    """Wait for the worker even if cancelled meanwhile, then let that cancel propagate."""
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            # asyncio.wait never cancels the future it watches, so the worker is not abandoned.
            await asyncio.wait({future})
        except asyncio.CancelledError as exc:
            cancelled = exc
    if not future.cancelled():
        future.exception()  # retrieved here, so an error after the consumer left is not reported as lost
    if cancelled is not None:
        raise cancelled
