"""TurnFence: work from a turn older than the newest known one is stale."""

from __future__ import annotations

from typing import cast

import pytest
from redis.asyncio import Redis

from shared import keys
from shared.turns import TurnFence

pytestmark = pytest.mark.unit


class FakeRedis:
    """Just the `get` the fence uses, over a dict; records which keys were read."""

    def __init__(self, values: dict[str, bytes] | None = None) -> None:
        self.values = values or {}
        self.reads: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        return self.values.get(key)


def fence(fake: FakeRedis | None = None, capacity: int = 50_000) -> TurnFence:
    return TurnFence(cast(Redis, fake or FakeRedis()), capacity=capacity)


def test_unknown_session_has_no_turn_and_nothing_is_stale() -> None:
    turns = fence()
    assert turns.latest("s") == -1
    assert not turns.is_stale("s", 0)


def test_older_turn_is_stale_current_and_newer_are_not() -> None:
    turns = fence()
    turns.observe("s", 5)
    assert turns.latest("s") == 5
    assert turns.is_stale("s", 4)
    assert turns.is_stale("s", 0)
    assert not turns.is_stale("s", 5)
    assert not turns.is_stale("s", 6)


def test_sessions_are_independent() -> None:
    turns = fence()
    turns.observe("a", 9)
    assert not turns.is_stale("b", 1)
    assert turns.latest("b") == -1


def test_observe_never_lowers() -> None:
    turns = fence()
    turns.observe("s", 7)
    turns.observe("s", 3)
    turns.observe("s", 0)
    assert turns.latest("s") == 7
    turns.observe("s", 8)
    assert turns.latest("s") == 8


def test_capacity_evicts_the_least_recently_observed() -> None:
    turns = fence(capacity=2)
    turns.observe("a", 1)
    turns.observe("b", 1)
    turns.observe("a", 0)  # touching "a" (even with an older turn) keeps it recent
    turns.observe("c", 1)
    assert turns.latest("a") == 1
    assert turns.latest("b") == -1
    assert turns.latest("c") == 1


def test_capacity_bounds_memory() -> None:
    turns = fence(capacity=3)
    for index in range(10):
        turns.observe(f"s{index}", index)
    assert [turns.latest(f"s{index}") for index in range(10)] == [-1] * 7 + [7, 8, 9]


async def test_check_stale_reads_the_counter() -> None:
    fake = FakeRedis({keys.turn_counter("s"): b"4"})
    turns = fence(fake)
    assert not turns.is_stale("s", 3)  # the local view has not heard of turn 4 yet
    assert await turns.check_stale("s", 3)
    assert fake.reads == [keys.turn_counter("s")]
    assert turns.latest("s") == 4  # and it is remembered
    assert turns.is_stale("s", 3)
    assert not await turns.check_stale("s", 4)


async def test_check_stale_without_a_counter_uses_the_local_view() -> None:
    turns = fence(FakeRedis())
    assert not await turns.check_stale("s", 0)
    turns.observe("s", 2)
    assert await turns.check_stale("s", 1)
    assert turns.latest("s") == 2


async def test_check_stale_counter_never_lowers_the_fence() -> None:
    fake = FakeRedis({keys.turn_counter("s"): b"1"})
    turns = fence(fake)
    turns.observe("s", 6)  # e.g. a broadcast arrived before a lagging replica's read
    assert await turns.check_stale("s", 5)
    assert turns.latest("s") == 6
