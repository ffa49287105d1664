"""Malformed client input gets an error event or a close code; another session never notices."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.talk import talk
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e


async def _next_event(ws: ClientConnection) -> dict[str, Any]:
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout=10)
        if isinstance(frame, str):
            event: dict[str, Any] = json.loads(frame)
            return event


async def _abuse(url: str) -> list[str]:
    """Send every kind of bad input on one session; return the error codes and the close code."""
    seen: list[str] = []
    async with connect(url, max_size=None) as ws:
        assert (await _next_event(ws))["type"] == "session.started"
        for bad in ["{not json", '{"type": "launch.missiles"}', "[1, 2]"]:
            await ws.send(bad)
            seen.append((await _next_event(ws))["code"])
        await ws.send(b"\x00" * 641)
        seen.append((await _next_event(ws))["code"])
        await ws.send(b"\x00" * 64_000)
        seen.append((await _next_event(ws))["code"])
        await ws.send(json.dumps({"type": "ping"}))
        seen.append((await _next_event(ws))["type"])
        await ws.send(json.dumps({"type": "audio.played", "turn_id": 0, "played_ms": -1}))
        seen.append((await _next_event(ws))["code"])
        await ws.send(json.dumps({"type": "session.update", "session": {"output_sample_rate": 1}}))
        seen.append((await _next_event(ws))["code"])
        await ws.send(json.dumps({"type": "session.update", "session": {"output_sample_rate": 24000}}))
        updated = await _next_event(ws)
        assert updated == {
            "type": "session.updated",
            "session": {"output_sample_rate": 24000, "instructions": "", "economy": False},
        }
        seen.append(updated["type"])
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send(b"\x00" * (10 * 1024 * 1024))
            await asyncio.wait_for(ws.recv(), timeout=10)
        assert closed.value.rcvd is not None
        seen.append(str(closed.value.rcvd.code))
    return seen


async def test_bad_input_is_answered_and_another_session_is_unaffected(
    stack: RunningStack, question_wav: Path
) -> None:
    healthy = asyncio.create_task(talk(question_wav, url=stack.url, timeout_s=90))
    codes = await _abuse(stack.url)
    result = await healthy

    assert codes == [
        "bad_json", "unknown_event", "bad_json", "bad_audio", "frame_too_large", "pong",
        "bad_event", "invalid_session_update", "session.updated", "1009",
    ]  # fmt: skip
    assert "france" in result.transcript.lower()
    assert result.reply_audio


async def test_foreign_origin_is_closed_with_policy_violation(stack: RunningStack) -> None:
    async with connect(stack.url, origin="https://evil.example") as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_bad_query_parameter_is_refused(stack: RunningStack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.url + "?output_sample_rate=5") as ws:
            await asyncio.wait_for(ws.recv(), timeout=10)
    assert refused.value.response.status_code == 403
