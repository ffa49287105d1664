"""Leases on a real Redis: a busy replica keeps its running work, and work taken over stays taken over."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from shared.bus import Bus, Delivery, WorkQueue
from shared.schema import Message
from tests.eventually import eventually
from tests.integration.test_bus import GROUP, STREAM, _request, running

pytestmark = pytest.mark.integration

CLAIM_IDLE_MS = 600  # leases renewed every 0.2 s


async def _owners(bus: Bus) -> dict[bytes, bytes]:
    pending: Any = await bus.redis.xpending_range(STREAM, GROUP, "-", "+", 100)
    return {entry["message_id"]: entry["consumer"] for entry in pending}


async def test_a_replica_waiting_to_adopt_dead_work_keeps_renewing_its_running_job(bus: Bus) -> None:
    """The lease loop used to adopt a dead replica's entry and then wait for a free slot: with the only slot
    taken by a new job, that job's lease lapsed for its whole run and another replica took it over."""
    ghost = WorkQueue(bus, STREAM, GROUP, "ghost", label="test", block_ms=100)
    await ghost.ensure_group()
    await bus.send(STREAM, _request("orphan", 0))
    assert await ghost.read()  # the ghost dies holding it
    await ghost.close()
    await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.2)

    handled: list[str] = []

    async def handle(message: Message) -> None:
        handled.append(message.session_id)
        if message.session_id == "live":
            await asyncio.sleep(2.5)

    rival = WorkQueue(bus, STREAM, GROUP, "rival", label="test", claim_idle_ms=CLAIM_IDLE_MS)
    stolen: list[Delivery] = []
    try:
        async with running(
            bus, handle, consumer="a", claim_idle_ms=CLAIM_IDLE_MS, block_ms=3000, grace_s=0.2
        ):

            async def orphan_adopted() -> bool:
                return b"ghost" not in (await _owners(bus)).values()

            await eventually(orphan_adopted)
            await bus.send(STREAM, _request("live", 0))

            async def live_started() -> bool:
                return "live" in handled

            await eventually(live_started)
            # Another replica looks for abandoned work all through the live job.
            async with asyncio.timeout(2.2):
                while True:
                    stolen += await rival.claim_stale()
                    await asyncio.sleep(0.1)
    except TimeoutError:
        pass
    finally:
        await rival.close()
    assert [d.message.session_id for d in stolen] == [], "a running job's entry was taken over"
    assert sorted(handled) == ["live", "orphan"]


async def test_work_taken_over_stays_with_the_new_owner_and_the_old_one_stops(bus: Bus) -> None:
    """Renewing a lease with a bare XCLAIM (min idle 0) took back an entry another replica had taken over,
    and both went on working on it (a double reply)."""
    started, ended = asyncio.Event(), asyncio.Event()

    async def handle(message: Message) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # works until stopped
        finally:
            ended.set()

    async def rival_keeps_its_lease(entry_id: bytes) -> None:
        # The rival is alive: it renews its lease, so its work never looks abandoned (on a slow machine the
        # test would otherwise outlast CLAIM_IDLE_MS and "a" would rightly adopt the rival's work).
        while True:
            await bus.redis.xclaim(STREAM, GROUP, "rival", 0, [entry_id], justid=True)
            await asyncio.sleep(CLAIM_IDLE_MS / 3000)

    async with running(bus, handle, consumer="a", claim_idle_ms=CLAIM_IDLE_MS, grace_s=0.2) as worker:
        await bus.send(STREAM, _request("s1", 0))
        await asyncio.wait_for(started.wait(), timeout=5)
        [entry_id] = await _owners(bus)
        # Another replica takes it over, as it does when this one looks dead (stalled past CLAIM_IDLE_MS).
        rival = asyncio.create_task(rival_keeps_its_lease(entry_id))
        try:
            await eventually(lambda: ended.is_set() and worker.in_flight == 0)
            await asyncio.sleep(0.5)  # more lease rounds
            assert await _owners(bus) == {entry_id: b"rival"}
        finally:
            rival.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rival
    assert await _owners(bus) == {entry_id: b"rival"}, "the old owner neither acks nor requeues it"
    assert await bus.redis.xlen(STREAM) == 1


async def test_handled_requests_do_not_linger_in_the_queue(bus: Bus) -> None:
    """Reply requests carry transcripts: once older than the queue's retention they are trimmed away."""
    handled: list[str] = []

    async def handle(message: Message) -> None:
        handled.append(message.session_id)

    async with running(bus, handle, consumer="a", claim_idle_ms=CLAIM_IDLE_MS, retention_s=0.5):
        for n in range(3):
            await bus.send(STREAM, _request(f"s{n}", 0))
        await eventually(lambda: len(handled) == 3)
        assert await bus.redis.xlen(STREAM) == 3

        async def trimmed() -> bool:
            return await bus.redis.xlen(STREAM) == 0

        await eventually(trimmed, within=3)
