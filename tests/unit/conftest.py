"""Unit-test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from services.gateway.conversation import Conversation
from tests.deploy_support import GEMINI_ENV
from tests.unit.conversation_support import RATE, Clock, FakeEffects


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No VOXMESH_/Redis/Gemini variables from the developer's shell leak into settings."""
    for name in list(os.environ):
        if name.startswith("VOXMESH_") or name in GEMINI_ENV | {"REDIS_URL"}:
            monkeypatch.delenv(name)
    yield monkeypatch


@pytest.fixture
def effects() -> FakeEffects:
    return FakeEffects()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def convo(effects: FakeEffects, clock: Clock) -> Conversation:
    return Conversation(effects, RATE, clock=clock)
