"""Abuse limits of the real gateway app under uvicorn, on a real Redis: sessions per address, text frames
rate-limited like audio, a client that stops reading closed with 1013 while another session goes on
unhindered, idle clients closed, and a clear `server_busy` when no ASR replica has room (a real ASR
process with one slot)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.gateway.app import Gateway
from services.gateway.settings import GatewaySettings
from services.gateway.transport import GatewayWebSocketProtocol
from shared import keys
from shared.bus import Bus
from shared.schema import AudioChunk, PhraseAudioDone, ReplyDone, ReplyPhrase, ReplyRequested, decode
from tests.eventually import eventually
from tests.gateway_support import serving
from tests.mesh_support import FakeAsr, fake_asr, service_process
from tests.ports import free_port_run

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_voxmesh_env")]

# 1 s of 16 kHz noise: audio that permessage-deflate cannot shrink (silence would go out as a few bytes)
CHUNK = random.Random(7).randbytes(32_000)


def _settings(**values: Any) -> GatewaySettings:
    return GatewaySettings(http_host="127.0.0.1", http_port=free_port_run(), auth="off", **values)


@asynccontextmanager
async def _gateway(bus: Bus, **values: Any) -> AsyncIterator[tuple[Gateway, FakeAsr]]:
    async with serving(_settings(**values), bus, drain_s=2.0) as gateway, fake_asr(bus) as asr:
        yield gateway, asr


def _open(gateway: Gateway, *, rcvbuf: int | None = None, max_queue: int = 16) -> Any:
    """A WebSocket to the gateway; `rcvbuf` shrinks the client's socket buffer (a client that reads
    little fills it at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", gateway.settings.http_port))
    url = f"ws://127.0.0.1:{gateway.settings.http_port}/v1/realtime"
    return connect(url, sock=sock, proxy=None, open_timeout=5, max_queue=max_queue)


async def _event(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    """The next JSON event (binary frames skipped)."""
    async with asyncio.timeout(within):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                event: dict[str, Any] = json.loads(frame)
                return event


async def _closed(ws: ClientConnection, within: float = 10.0) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None, "the connection ended without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _session_id(ws: ClientConnection) -> str:
    started = await _event(ws)
    assert started["type"] == "session.started"
    return str(started["session_id"])


async def _reply_work(bus: Bus, session_id: str) -> int:
    """The work number of the session's reply request (what the LLM would answer under)."""
    async with asyncio.timeout(5):
        while True:
            entries: Any = await bus.redis.xrange(keys.LLM_REQUESTS)
            for _, fields in entries:
                message = decode(fields)
                if isinstance(message, ReplyRequested) and message.session_id == session_id:
                    return message.turn_id
            await asyncio.sleep(0.02)


async def _ask(bus: Bus, asr: FakeAsr, session_id: str) -> int:
    await asr.say(session_id, "Tell me a long story.")
    return await _reply_work(bus, session_id)


# ---- sessions per address


async def test_one_address_gets_a_bounded_number_of_sessions(bus: Bus) -> None:
    async with _gateway(bus, max_sessions_per_ip=2) as (gateway, _):
        async with _open(gateway) as first, _open(gateway) as second:
            await _session_id(first)
            await _session_id(second)
            async with _open(gateway) as third:
                assert await _closed(third) == (1013, "too many sessions from this address")
            assert len(gateway.sessions) == 2
        await eventually(lambda: not gateway.sessions)
        async with _open(gateway) as again:  # a session that ended frees its place
            await _session_id(again)


# ---- text frames


async def test_text_frames_are_rate_limited_like_audio(bus: Bus) -> None:
    async with _gateway(bus, text_events_per_s=5.0, text_burst=5) as (gateway, _), _open(gateway) as ws:
        await _session_id(ws)
        started = time.monotonic()
        for _ in range(60):
            await ws.send(json.dumps({"type": "ping"}))
        events = await _events_until_quiet(ws)
        elapsed = time.monotonic() - started
        pongs = sum(event["type"] == "pong" for event in events)
        errors = [event for event in events if event["type"] == "error"]
        assert 5 <= pongs <= 5 + 5 * elapsed + 1, f"{pongs} pongs in {elapsed:.1f} s"
        assert errors and {e["code"] for e in errors} == {"rate_limited"}
        assert len(errors) <= 1 + elapsed, "one notice a second, not one per dropped frame"
        await asyncio.sleep(1.0)  # the bucket refills: the session goes on
        await ws.send(json.dumps({"type": "ping"}))
        assert (await _event(ws))["type"] == "pong"


async def _events_until_quiet(ws: ClientConnection, quiet_s: float = 0.5) -> list[dict[str, Any]]:
    events = []
    while True:
        try:
            events.append(await _event(ws, within=quiet_s))
        except TimeoutError:
            return events


# ---- clients that stop reading


async def _push_audio(bus: Bus, session_id: str, work: int, until: asyncio.Event, limit: int) -> int:
    """Reply audio for `work`, one second a chunk, until `until` is set; how many chunks were sent."""
    sent = 0
    while not until.is_set() and sent < limit:
        chunk = AudioChunk(
            session_id=session_id, turn_id=work, seq=sent, phrase_seq=0, sample_rate=16_000, audio=CHUNK
        )
        await bus.send_to_session(keys.session_out(session_id), chunk)
        sent += 1
        await asyncio.sleep(0.002)
    return sent


async def _complete_reply(bus: Bus, session_id: str, work: int) -> None:
    """A whole short reply for `work`: one phrase of three chunks."""
    ids = {"session_id": session_id, "turn_id": work}
    out = keys.session_out(session_id)
    await bus.send_to_session(out, ReplyPhrase(**ids, seq=0, text="Once upon a time."))
    for seq in range(3):
        await bus.send_to_session(
            out, AudioChunk(**ids, seq=seq, phrase_seq=0, sample_rate=16_000, audio=CHUNK[:3200])
        )
    await bus.send_to_session(out, PhraseAudioDone(**ids, seq=0, phrase_seq=0, chunk_count=3))
    await bus.send_to_session(out, ReplyDone(**ids, seq=1, phrase_count=1))


async def _turn_completes(ws: ClientConnection, within: float) -> list[str]:
    """What a reading client gets of one reply, through `audio.end`."""
    got: list[str] = []
    async with asyncio.timeout(within):
        while not got or got[-1] != "audio.end":
            frame = await ws.recv()
            got.append("binary" if isinstance(frame, bytes) else json.loads(frame)["type"])
    return got


@pytest.mark.parametrize(
    "limit",
    [
        {"outbound_queue_bytes": 1 << 16, "client_read_timeout_s": 60.0},
        {"outbound_queue_bytes": 1 << 30, "client_read_timeout_s": 1.0},
    ],
    ids=["queue-full", "read-timeout"],
)
async def test_a_client_that_stops_reading_is_closed_and_nobody_else_notices(
    bus: Bus, limit: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GatewayWebSocketProtocol, "close_timeout_s", 10.0)
    async with _gateway(bus, **limit) as (gateway, asr):
        # The slow client reads nothing after session.started: its library stops reading at once.
        async with _open(gateway, rcvbuf=8192, max_queue=1) as slow, _open(gateway) as other:
            slow_id, other_id = await _session_id(slow), await _session_id(other)
            slow_work = await _ask(bus, asr, slow_id)
            other_work = await _ask(bus, asr, other_id)
            gave_up = asyncio.Event()
            pushing = asyncio.create_task(_push_audio(bus, slow_id, slow_work, gave_up, limit=2000))
            slow_session = next(s for s in gateway.sessions if s.session_id == slow_id)

            # While the slow one's output piles up, the other session has a whole turn.
            await asyncio.sleep(0.5)
            for _ in range(2):
                await _event(other)  # speech.started, transcript.final
            await _complete_reply(bus, other_id, other_work)
            got = await _turn_completes(other, within=5)
            assert got[0] == "reply.text" and got.count("binary") == 3, got
            await other.send(json.dumps({"type": "ping"}))
            assert (await _event(other))["type"] == "pong"

            await eventually(lambda: slow_session.ws.gave_up, within=30)
            gave_up.set()
            pushed = await pushing
            # Its session ends while the client still reads nothing: nothing waits on it any more.
            await eventually(lambda: slow_session not in gateway.sessions, within=3)
            assert other_id in {s.session_id for s in gateway.sessions}

            # The slow client, reading at last, finds what was sent before the close, then 1013.
            code, reason = await _closed(slow, within=10)
            assert (code, reason) == (1013, "client too slow"), f"after {pushed} chunks pushed"


async def test_a_client_that_sends_nothing_is_closed_as_idle(bus: Bus) -> None:
    async with _gateway(bus, idle_timeout_s=1.0) as (gateway, _), _open(gateway) as ws:
        await _session_id(ws)
        started = time.monotonic()
        assert await _closed(ws, within=5) == (1000, "idle")
        assert 0.9 < time.monotonic() - started < 3.0
    await eventually(lambda: not gateway.sessions)


# ---- ASR admission


async def test_a_session_no_asr_replica_has_room_for_is_told_and_closed(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    asr_env = {"VOXMESH_ASR_MAX_SESSIONS": "1", "VOXMESH_ASR_TURN_POLICY": "false"}
    async with (
        service_process("asr", redis_url, tmp_path, **asr_env) as asr,
        serving(_settings(asr_admission_timeout_s=3.0), bus, drain_s=2.0) as gateway,
    ):
        async with _open(gateway) as first:
            await _session_id(first)
            async with _open(gateway) as second:
                await _session_id(second)
                busy = await _event(second, within=6)
                assert busy["type"] == "error" and busy["code"] == "server_busy", busy
                assert await _closed(second) == (1013, "try again later")
            with pytest.raises(TimeoutError):  # the first one was taken: it goes on
                await _event(first, within=1.0)
        # The slot is free again: the next session is taken (after the busy one, ended at once).
        async with _open(gateway) as third:
            await _session_id(third)
            with pytest.raises(TimeoutError):
                await _event(third, within=4.5)
        assert "Traceback" not in asr.log()
