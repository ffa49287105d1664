"""The ASR's VAD thread: calls run in order off the event loop, errors reach their caller, and calls that
come together are handed back together."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from services.asr.vad_thread import VadThread

pytestmark = pytest.mark.unit


async def test_calls_run_on_the_thread_in_order() -> None:
    vad = VadThread()
    ran: list[int] = []
    loop_thread = threading.get_ident()

    def call(i: int) -> tuple[int, bool]:
        ran.append(i)
        return i, threading.get_ident() != loop_thread

    try:
        results = await asyncio.gather(*(vad.run(functools.partial(call, i)) for i in range(50)))
        assert results == [(i, True) for i in range(50)]
        assert ran == list(range(50))
    finally:
        vad.close()


async def test_an_error_reaches_its_caller_only() -> None:
    vad = VadThread()

    def broken() -> int:
        raise ValueError("bad window")

    try:
        outcomes = await asyncio.gather(vad.run(broken), vad.run(lambda: 7), return_exceptions=True)
        assert isinstance(outcomes[0], ValueError)
        assert outcomes[1] == 7
    finally:
        vad.close()


async def test_calls_that_queue_together_are_handed_back_in_one_wakeup() -> None:
    vad = VadThread()
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(vad.run(gate.wait))
        await asyncio.sleep(0.05)  # the thread is in the first call
        rest = [asyncio.ensure_future(vad.run(functools.partial(int, i))) for i in range(20)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first is True
        assert await asyncio.gather(*rest) == list(range(20))
        assert vad.wakeups == 2
    finally:
        vad.close()


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    vad = VadThread()
    gate = threading.Event()
    try:
        blocked = asyncio.ensure_future(vad.run(gate.wait))
        await asyncio.sleep(0.05)
        blocked.cancel()
        after = vad.run(lambda: "next")
        gate.set()
        assert await asyncio.wait_for(after, 5) == "next"
    finally:
        vad.close()
    with pytest.raises(RuntimeError):
        await vad.run(lambda: None)
