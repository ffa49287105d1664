"""Random bytes and JSON, drawn by hypothesis, on the real WebSocket of the whole running assistant, one
session after another, while another session asks a question and gets its answer: every frame is
answered with an error event or taken, the session stays open and answers a ping, nothing is logged as
failed, and the other session never notices."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from clients.talk import talk
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

ERROR_CODES = {
    "bad_json", "unknown_event", "bad_event", "invalid_session_update", "bad_audio", "frame_too_large",
    "rate_limited",
}  # fmt: skip
EXAMPLES_PER_ROUND = 10

_text = st.text(st.characters(codec="utf-8"), max_size=60)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)
# session.close is left out: it ends the session, and the point is what the session survives.
_events = st.builds(
    lambda kind, fields: json.dumps({"type": kind, **fields}),
    st.sampled_from(["ping", "response.cancel", "audio.played", "session.update", "session.usage"]) | _text,
    st.dictionaries(st.sampled_from(["turn_id", "played_ms", "session"]) | _text, _json, max_size=3),
)
_frames = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=200),
        _json.map(json.dumps),
        _events,
        st.binary(max_size=1_500),  # a little noise for the ASR to hear
        st.integers(32_001, 100_000).map(bytes),  # over the frame limit
    ),
    max_size=15,  # text frames stay within the rate limit's burst, so the last ping is answered
)


def _answer_to_ping(ws: ClientConnection) -> list[dict[str, Any]]:
    """Events up to the pong of a ping sent now."""
    ws.send(json.dumps({"type": "ping"}))
    events = []
    while True:
        frame = ws.recv(timeout=10)
        if isinstance(frame, str):
            events.append(json.loads(frame))
            if events[-1]["type"] == "pong":
                return events


def _fuzz_round(url: str, sessions: list[int]) -> None:
    @settings(max_examples=EXAMPLES_PER_ROUND, deadline=None, database=None)
    @given(_frames)
    def one_session(frames: list[str | bytes]) -> None:
        with connect(url, max_size=None, open_timeout=10) as ws:
            started = json.loads(ws.recv(timeout=10))
            assert started["type"] == "session.started"
            for frame in frames:
                ws.send(frame)
            try:
                events = _answer_to_ping(ws)
            except ConnectionClosed as closed:
                raise AssertionError(f"the session was closed: {closed}") from closed
            codes = {event["code"] for event in events if event["type"] == "error"}
            assert codes <= ERROR_CODES, codes
        sessions.append(len(frames))

    one_session()


async def test_random_frames_while_another_session_completes_a_turn(
    stack: RunningStack, question_wav: Path
) -> None:
    healthy = asyncio.create_task(talk(question_wav, url=stack.url, timeout_s=120))
    sessions: list[int] = []
    while not healthy.done() or not sessions:
        await asyncio.to_thread(_fuzz_round, stack.url, sessions)
    result = await healthy

    assert "france" in result.transcript.lower()
    assert result.reply_audio
    assert len(sessions) >= EXAMPLES_PER_ROUND
    log = stack.log_path.read_text(errors="replace")
    assert "session failed" not in log and "Traceback" not in log
