"""The thread → asyncio bridge the model engines share: order, errors, and a worker never left running."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing

import pytest

from shared.threadstream import stream_from_thread

pytestmark = pytest.mark.unit


def counter(limit: int, log: list[str]) -> Callable[[Callable[[int], None], threading.Event], int]:
    def produce(emit: Callable[[int], None], stop: threading.Event) -> int:
        sent = 0
        for i in range(limit):
            if stop.is_set():
                log.append("stopped")
                return sent
            emit(i)
            sent += 1
            time.sleep(0.002)
        log.append("finished")
        return sent

    return produce


async def test_items_arrive_in_order_and_the_outcome_is_checked() -> None:
    outcomes: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        items = [i async for i in stream_from_thread(pool, counter(20, []), outcomes.append)]
    assert items == list(range(20)) and outcomes == [20]


async def test_leaving_early_stops_the_worker_and_waits_for_it() -> None:
    log: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        async with aclosing(stream_from_thread(pool, counter(10_000, log))) as items:
            async for item in items:
                if item == 3:
                    break
        # Closing the generator stopped the worker and waited for it to return.
        assert log == ["stopped"]


async def test_a_worker_error_is_raised_in_the_consumer() -> None:
    def broken(emit: Callable[[int], None], stop: threading.Event) -> None:
        emit(1)
        raise ValueError("model failed")

    with ThreadPoolExecutor(1) as pool:
        seen: list[int] = []
        with pytest.raises(ValueError, match="model failed"):
            async for item in stream_from_thread(pool, broken):
                seen.append(item)
    assert seen == [1]


async def test_a_consumer_that_stops_reading_pauses_a_bounded_worker() -> None:
    emitted: list[int] = []

    def produce(emit: Callable[[int], None], stop: threading.Event) -> None:
        for i in range(1000):
            if stop.is_set():
                return
            emit(i)
            emitted.append(i)

    with ThreadPoolExecutor(1) as pool:
        async with aclosing(stream_from_thread(pool, produce, max_pending=3)) as items:
            assert await anext(items) == 0
            await asyncio.sleep(0.2)  # not reading: the worker must wait, not run ahead
            assert len(emitted) <= 4, "the worker ran ahead of a consumer that stopped reading"
            rest = [await anext(items) for _ in range(50)]
        assert rest == list(range(1, 51))
        # Closing while the worker waits for a slot wakes it at once; it returns without running on.
        assert len(emitted) <= 51 + 3
