"""The talk client against a scripted fake gateway: pacing, turn handling, errors, CLI output."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from services.talk import TalkError, add_arguments, run, talk
from shared.audio import read_wav, write_wav

pytestmark = pytest.mark.unit

FRAME = 640  # 20 ms at 16 kHz
REPLY = b"\x01\x02" * 800  # one reply audio chunk


@dataclass(frozen=True)
class Close:
    """Script step: the server closes the socket."""

    code: int
    reason: str


Step = dict[str, object] | bytes | Close


@dataclass
class FakeGateway:
    """Follows docs/protocol.md; `script[n]` is sent once the n-th audio frame has arrived."""

    script: dict[int, Sequence[Step]]
    frames: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        started = {"type": "session.started", "session_id": "s1", "input_sample_rate": 16000}
        await ws.send(json.dumps(started | {"output_sample_rate": 16000}))
        async for message in ws:
            if isinstance(message, str):
                continue
            self.frames.append(message)
            self.arrivals.append(time.monotonic())
            for step in self.script.get(len(self.frames), ()):
                if isinstance(step, Close):
                    await ws.close(step.code, step.reason)
                    return
                await ws.send(step if isinstance(step, bytes) else json.dumps(step))


@asynccontextmanager
async def running(script: dict[int, Sequence[Step]]) -> AsyncIterator[tuple[FakeGateway, str]]:
    """Serve a fake gateway on a free loopback port; yields it and its URL."""
    gateway = FakeGateway(script)
    async with serve(gateway.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield gateway, f"ws://127.0.0.1:{port}/v1/realtime"


def answer(turn: int, text: str, reply: str, sample_rate: int = 16000) -> list[Step]:
    """The events of one answered turn, phrases deliberately out of order."""
    first, second = reply.split(" ", 1)
    return [
        {"type": "transcript.final", "turn_id": turn, "text": text},
        {"type": "reply.text", "turn_id": turn, "seq": 1, "text": second},
        {"type": "reply.text", "turn_id": turn, "seq": 0, "text": first},
        {"type": "audio.start", "turn_id": turn, "sample_rate": sample_rate},
        REPLY,
        REPLY,
        {"type": "audio.end", "turn_id": turn},
    ]


def tone_wav(path: Path, seconds: float, rate: int = 16000) -> bytes:
    """Write a 440 Hz mono tone; returns its PCM."""
    t = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    write_wav(path, pcm, rate)
    return pcm


async def test_streams_in_real_time_and_collects_the_reply(tmp_path: Path) -> None:
    pcm = tone_wav(tmp_path / "q.wav", 0.5)  # 25 frames
    script: dict[int, Sequence[Step]] = {
        3: [{"type": "speech.started", "turn_id": 1}],
        28: answer(1, "what time is it", "It is noon.", sample_rate=24000),
    }
    async with running(script) as (gateway, url):
        result = await talk(tmp_path / "q.wav", url=url, out_path=tmp_path / "a.wav", timeout_s=10)

    assert result.transcript == "what time is it"
    assert result.reply_text == "It is noon."
    assert result.reply_audio == REPLY * 2
    assert result.sample_rate == 24000
    assert result.first_audio_ms is not None and result.first_audio_ms >= 0
    assert result.total_ms >= 500
    assert all(len(frame) == FRAME for frame in gateway.frames)
    assert b"".join(gateway.frames[:25]) == pcm
    assert set(b"".join(gateway.frames[25:])) == {0}  # then silence, like an open microphone
    assert gateway.arrivals[24] - gateway.arrivals[0] >= 0.4  # real time, not a burst
    assert read_wav(tmp_path / "a.wav") == (REPLY * 2, 24000)


async def test_audio_clear_drops_the_interrupted_reply(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.3)  # 15 frames
    interrupted: list[Step] = [
        {"type": "speech.started", "turn_id": 1},
        {"type": "transcript.final", "turn_id": 1, "text": "tell me"},
        {"type": "reply.text", "turn_id": 1, "seq": 0, "text": "Sure."},
        {"type": "audio.start", "turn_id": 1, "sample_rate": 16000},
        b"\x07\x07" * 400,
        {"type": "speech.started", "turn_id": 2},
        {"type": "audio.clear", "turn_id": 1},
        b"\x07\x07" * 400,  # still in flight when the clear went out: must not count
    ]
    script: dict[int, Sequence[Step]] = {5: interrupted, 17: answer(2, "a joke", "Knock knock.")}
    async with running(script) as (_, url):
        result = await talk(tmp_path / "q.wav", url=url, timeout_s=10)

    assert result.transcript == "tell me a joke"
    assert result.reply_text == "Knock knock."
    assert result.reply_audio == REPLY * 2


async def test_an_answer_before_the_file_ends_completes_when_it_ends(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.3)  # 15 frames
    async with running({5: answer(1, "early", "Too soon.")}) as (gateway, url):
        result = await talk(tmp_path / "q.wav", url=url, timeout_s=10)

    assert result.reply_text == "Too soon."
    assert len(gateway.frames) in (15, 16)  # stopped as soon as the file was out
    # The reply began before the file ended: the file carries trailing silence, so the latency is negative.
    assert result.first_audio_ms is not None and result.first_audio_ms < 0


async def test_turn_failed_raises(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.2)
    failure: list[Step] = [
        {"type": "transcript.final", "turn_id": 1, "text": "hello"},
        {"type": "error", "code": "turn_failed", "message": "llm unavailable", "turn_id": 1},
    ]
    async with running({12: failure}) as (_, url):
        with pytest.raises(TalkError, match="llm unavailable"):
            await talk(tmp_path / "q.wav", url=url, timeout_s=10)


async def test_other_errors_do_not_end_the_conversation(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.2)
    warning: list[Step] = [
        {"type": "error", "code": "rate_limited", "message": "slow down"},
        {"type": "pong"},
    ]
    async with running({2: warning, 12: answer(1, "hi", "Hello there.")}) as (_, url):
        result = await talk(tmp_path / "q.wav", url=url, timeout_s=10)
    assert result.reply_text == "Hello there."


async def test_policy_close_raises_with_the_code(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.2)
    async with running({2: [Close(1008, "origin not allowed")]}) as (_, url):
        with pytest.raises(TalkError, match="1008.*origin not allowed"):
            await talk(tmp_path / "q.wav", url=url, timeout_s=10)


async def test_timeout_says_what_was_missing(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.1)
    async with running({}) as (_, url):
        with pytest.raises(TalkError, match="no transcript.final"):
            await talk(tmp_path / "q.wav", url=url, timeout_s=0.5)


async def test_accepts_44k1_stereo(tmp_path: Path) -> None:
    rate, seconds = 44100, 0.3
    t = np.arange(int(rate * seconds)) / rate
    left = np.sin(2 * np.pi * 300 * t) * 8000
    stereo = np.stack([left, -left / 2], axis=1).astype("<i2")
    with wave.open(str(tmp_path / "q.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(stereo.tobytes())
    async with running({17: answer(1, "stereo", "Heard you.")}) as (gateway, url):
        result = await talk(tmp_path / "q.wav", url=url, timeout_s=10)

    assert result.reply_text == "Heard you."
    assert all(len(frame) == FRAME for frame in gateway.frames)
    audible = [frame for frame in gateway.frames if any(frame)]
    assert len(audible) == pytest.approx(15, abs=1)  # 0.3 s at 16 kHz, resampled and mixed down


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


async def test_cli_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tone_wav(tmp_path / "q.wav", 0.2)
    async with running({12: answer(1, "ping", "Pong pong.")}) as (_, url):
        # run() owns its event loop, so it goes to a worker thread while this loop serves the fake.
        code = await asyncio.to_thread(run, cli_args(str(tmp_path / "q.wav"), "--url", url, "--json"))

    assert code == 0
    output = json.loads(capsys.readouterr().out)
    assert set(output) == {"transcript", "reply_text", "first_audio_ms", "total_ms"}
    assert output["reply_text"] == "Pong pong."


def test_cli_reports_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(cli_args(str(tmp_path / "missing.wav"), "--timeout", "1"))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("voxmesh talk: error:") and "Traceback" not in err
