"""One thread for a replica's voice-activity detection, handing finished calls back in batches.

Every session's microphone frames go through Silero on a thread (model calls stay off the event loop).
With `asyncio.to_thread`, each call's completion wakes the event loop on its own (a write to its self-pipe):
at 50 frames a second per session that was ~10 % of the ASR's CPU at 40 sessions, as much again as the
reads themselves. Here the calls queue for one thread, which runs whatever has queued and then wakes the
loop once for the lot. Calls run in the order they were made; a session's calls are made one at a time.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class VadThread:
    """Runs blocking calls on one thread; `close` ends it (calls queued before are still run)."""

    def __init__(self, name: str = "asr-vad") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self.wakeups = 0
        """Times the thread handed finished calls back (fewer than the calls when they come together)."""
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, call: Callable[[], T]) -> T:
        """The result of `call()`, run on the thread; a cancel leaves the call to finish unheeded."""
        if self._closed:
            raise RuntimeError("the VAD thread is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((call, future, loop))
        return await future

    def close(self) -> None:
        """Stop the thread once the calls queued so far have run (does not wait)."""
        self._closed = True
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while True:  # everything queued meanwhile goes back in the same wake-up
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            done: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]]
            done = {}
            stopping = False
            for job in batch:
                if job is None:
                    stopping = True
                    continue
                call, future, loop = job
                try:
                    outcome: tuple[Any, BaseException | None] = (call(), None)
                except BaseException as exc:  # handed to the caller, as to_thread would
                    outcome = (None, exc)
                done.setdefault(loop, []).append((future, *outcome))
            for loop, settled in done.items():
                self.wakeups += 1
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:  # that loop is closed: nobody waits any more
                    pass
            if stopping:
                return


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.done():  # its caller was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
