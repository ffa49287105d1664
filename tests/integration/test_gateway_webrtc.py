"""WebRTC sessions on the real gateway (in this process, under uvicorn) on a real Redis, with real LLM
and TTS processes (the LLM behind a fake Gemini, the TTS with the bundled voice) and the ASR stood in
for: the microphone track reaches the ASR's stream, the reply plays on the gateway's track, a barge-in
stops it at once and the history keeps only what was played."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest

from services.gateway.app import Gateway
from services.gateway.settings import GatewaySettings
from shared import keys
from shared.bus import Bus
from shared.history import load_history
from shared.schema import FIELD_AUDIO
from tests.eventually import eventually
from tests.fake_gemini import FakeGeminiServer
from tests.gateway_support import serving
from tests.mesh_support import FakeAsr, fake_asr, llm_and_tts
from tests.ports import free_port_run
from tests.webrtc_support import Received, rtc_session

pytestmark = pytest.mark.integration

LONG_REPLY = (
    "Paris is the capital of France. It sits on the river Seine, in the north of the country. "
    "It is known for the Eiffel Tower, for the Louvre, and for its long and busy avenues. "
    "Millions of people visit it every year, and many of them come back again."
)


@asynccontextmanager
async def _gateway_mesh(
    bus: Bus, redis_url: str, tmp_path: Path, gemini: FakeGeminiServer
) -> AsyncIterator[tuple[str, FakeAsr, Gateway]]:
    settings = GatewaySettings(http_host="127.0.0.1", http_port=free_port_run(), auth="off")
    async with (
        llm_and_tts(redis_url, tmp_path, gemini),
        fake_asr(bus) as asr,
        serving(settings, bus) as gateway,
    ):
        yield f"http://127.0.0.1:{settings.http_port}/v1/webrtc/offer", asr, gateway


@asynccontextmanager
async def _mesh(
    bus: Bus, redis_url: str, tmp_path: Path, gemini: FakeGeminiServer
) -> AsyncIterator[tuple[str, FakeAsr]]:
    async with _gateway_mesh(bus, redis_url, tmp_path, gemini) as (url, asr, _):
        yield url, asr


def _reply_ended(got: Received) -> bool:
    return bool(got.of("audio.end"))


async def test_a_turn_over_webrtc_plays_its_reply_on_the_track(
    bus: Bus, redis_url: str, tmp_path: Path, clean_voxmesh_env: None
) -> None:
    reply = "Paris is the capital of France."
    with FakeGeminiServer(reply=reply) as gemini:
        async with _mesh(bus, redis_url, tmp_path, gemini) as (url, asr), rtc_session(url) as (link, got):
            started = await got.event("session.started")
            session_id = started["session_id"]
            assert started["output_sample_rate"] == 48_000
            for _ in range(25):
                await link.send(bytes(640))  # 20 ms of 16 kHz microphone audio
                await asyncio.sleep(0.02)
            # The microphone reaches the ASR's stream as 16 kHz PCM, 20 ms a frame.
            await eventually(lambda: _has_audio_frames(bus, session_id, 10), within=5)

            await asr.say(session_id, "What is the capital of France?")
            await got.until(_reply_ended, within=60)
            start, end = got.at("audio.start"), got.at("audio.end")
            assert start is not None and end is not None
            played_ms = got.audio_ms()
            # The reply sounded on the track (not silence), and audio.end came once it had played.
            assert played_ms > 800, played_ms
            assert (end - start) * 1000 >= played_ms * 0.8
            assert " ".join(e["text"] for e in got.of("reply.text")).strip() == reply

            # The gateway counted what its track played: the whole reply, heard, not interrupted (the
            # exchange is written to the history when the next one starts).
            await asr.say(session_id, "Thanks.")
            await eventually(lambda: _history_length(bus, session_id, 2), within=10)
            history = await load_history(bus.redis, session_id)
            assert history[1].role == "assistant" and history[1].text == reply
            assert not history[1].interrupted


async def test_a_barge_in_stops_the_track_at_once_and_keeps_only_what_was_played(
    bus: Bus, redis_url: str, tmp_path: Path, clean_voxmesh_env: None
) -> None:
    with FakeGeminiServer(reply=LONG_REPLY, words_per_chunk=4) as gemini:
        async with _mesh(bus, redis_url, tmp_path, gemini) as (url, asr), rtc_session(url) as (link, got):
            session_id = (await got.event("session.started"))["session_id"]
            await asr.say(session_id, "Tell me about Paris.")
            await got.until(lambda g: g.audio_ms() > 1500, within=60)

            gemini.reply = "Berlin is the capital of Germany."
            gemini.delay_s = 1.0  # the next reply's audio comes well after the window checked below
            await asr.say(session_id, "And Germany?")
            clear = await got.event("audio.clear", within=10)
            cleared_at = got.at("audio.clear")
            assert cleared_at is not None
            truncated = await got.event("reply.truncated", within=10)
            assert truncated["turn_id"] == clear["turn_id"]
            # What the track played: more than what the client had when it spoke, far less than the whole.
            assert 1500 <= truncated["played_ms"] < 12_000
            assert truncated["text"] and LONG_REPLY.startswith(truncated["text"].rstrip(".,"))
            await asyncio.sleep(1.5)
            # The track went quiet at once: what was in flight (the client's 80 ms jitter buffer, the
            # network) is all that came, against the seconds of the reply the track still held. Counted in
            # frames, not timed: on a loaded machine the client may take in-flight frames late, and the
            # clear (data channel) and the audio (RTP) do not share an order.
            starts = [at for at, event in got.events if event.get("type") == "audio.start"]
            next_reply_at = starts[1] if len(starts) > 1 else float("inf")
            late = [at for at in link.sounding if cleared_at < at < next_reply_at]
            assert len(late) <= 25, f"{len(late)} frames (20 ms each) with sound after the clear"
            assert any(at > cleared_at - 0.5 for at in link.sounding)  # it was sounding until then

            await eventually(lambda: _history_length(bus, session_id, 2), within=20)
            assistant = (await load_history(bus.redis, session_id))[1]
            assert assistant.interrupted and assistant.text == truncated["text"]


async def test_a_draining_gateway_lets_the_track_play_the_reply_out_then_says_going_away(
    bus: Bus, redis_url: str, tmp_path: Path, clean_voxmesh_env: None
) -> None:
    with FakeGeminiServer(reply=LONG_REPLY) as gemini:
        async with (
            _gateway_mesh(bus, redis_url, tmp_path, gemini) as (url, asr, gateway),
            rtc_session(url) as (_, got),
        ):
            session_id = (await got.event("session.started"))["session_id"]
            await asr.say(session_id, "Tell me about Paris.")
            await got.event("audio.start", within=60)
            async with asyncio.TaskGroup() as group:
                draining = group.create_task(gateway.drain(grace_s=40))
                closed = await got.event("session.closed", within=40)
                await draining
            assert closed["code"] == 1001
            end, closed_at = got.at("audio.end"), got.at("session.closed")
            # The whole reply sounded before the goodbye: audio.end (played out) came first.
            assert end is not None and closed_at is not None and end <= closed_at
            assert got.audio_ms() > 5000


async def _has_audio_frames(bus: Bus, session_id: str, count: int) -> bool:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await bus.redis.xrange(keys.audio_in(session_id)))
    sizes = {len(fields[FIELD_AUDIO]) for _, fields in entries if FIELD_AUDIO in fields}
    # 20 ms frames of 16-bit PCM (the resampler's first one is shorter by its filter delay).
    assert all(size % 2 == 0 and size <= 640 for size in sizes), sizes
    return len(entries) >= count


async def _history_length(bus: Bus, session_id: str, count: int) -> bool:
    return len(await load_history(bus.redis, session_id)) >= count
