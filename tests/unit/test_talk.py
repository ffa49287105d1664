"""The talk client against a scripted fake gateway: pacing, playback, turns, barge-in, errors, CLI output."""

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

from clients.talk import TalkError, add_arguments, converse, run, talk
from shared.audio import read_wav, write_wav

pytestmark = pytest.mark.unit

FRAME = 640  # 20 ms at 16 kHz
REPLY = b"\x01\x02" * 800  # one reply audio chunk: 50 ms at 16 kHz


@dataclass(frozen=True)
class Close:
    """Script step: the server closes the socket."""

    code: int
    reason: str


Step = dict[str, object] | bytes | Close
Script = dict[int, Sequence[Step]]


@dataclass
class FakeGateway:
    """Follows docs/protocol.md, driven by what arrives.

    `script[n]` is sent once the n-th audio frame has arrived, `speech[n]` once the n-th frame that is
    not silence has, and `played[t]` once the client reported `audio.played` for turn t.
    """

    script: Script
    speech: Script = field(default_factory=dict)
    played: Script = field(default_factory=dict)
    frames: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    reports: list[tuple[float, dict[str, object]]] = field(default_factory=list)
    audible: int = 0

    async def handler(self, ws: ServerConnection) -> None:
        started = {"type": "session.started", "session_id": "s1", "input_sample_rate": 16000}
        await ws.send(json.dumps(started | {"output_sample_rate": 16000}))
        async for message in ws:
            if isinstance(message, str):
                report = json.loads(message)
                self.reports.append((time.monotonic(), report))
                if report["type"] == "audio.played" and await self._play(ws, self.played, report["turn_id"]):
                    return
                continue
            self.frames.append(message)
            self.arrivals.append(time.monotonic())
            if await self._play(ws, self.script, len(self.frames)):
                return
            if any(message):
                self.audible += 1
                if await self._play(ws, self.speech, self.audible):
                    return

    @staticmethod
    async def _play(ws: ServerConnection, script: Script, key: object) -> bool:
        """Send the steps for `key`; True once the socket was closed."""
        for step in script.get(key, ()) if isinstance(key, int) else ():
            if isinstance(step, Close):
                await ws.close(step.code, step.reason)
                return True
            await ws.send(step if isinstance(step, bytes) else json.dumps(step))
        return False


@asynccontextmanager
async def running(
    script: Script, speech: Script | None = None, played: Script | None = None
) -> AsyncIterator[tuple[FakeGateway, str]]:
    """Serve a fake gateway on a free loopback port; yields it and its URL."""
    gateway = FakeGateway(script, speech or {}, played or {})
    async with serve(gateway.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield gateway, f"ws://127.0.0.1:{port}/v1/realtime"


def answer(
    turn: int, text: str, reply: str, sample_rate: int = 16000, audio: bytes = REPLY * 2
) -> list[Step]:
    """The events of one answered turn, phrases deliberately out of order."""
    first, second = reply.split(" ", 1)
    chunks: list[Step] = [audio[i : i + 3200] for i in range(0, len(audio), 3200)]
    return [
        {"type": "transcript.final", "turn_id": turn, "text": text},
        {"type": "reply.text", "turn_id": turn, "seq": 1, "text": second},
        {"type": "reply.text", "turn_id": turn, "seq": 0, "text": first},
        {"type": "audio.start", "turn_id": turn, "sample_rate": sample_rate, "latency_ms": 500},
        *chunks,
        {"type": "audio.end", "turn_id": turn},
    ]


def tone_wav(path: Path, seconds: float, rate: int = 16000) -> bytes:
    """Write a 440 Hz mono tone; returns its PCM."""
    t = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    write_wav(path, pcm, rate)
    return pcm


def played_reports(gateway: FakeGateway) -> list[dict[str, object]]:
    return [report for _, report in gateway.reports if report["type"] == "audio.played"]


# ---- one question, as `voxmesh talk q.wav` has always done


async def test_streams_in_real_time_and_collects_the_reply(tmp_path: Path) -> None:
    pcm = tone_wav(tmp_path / "q.wav", 0.5)  # 25 frames
    script: Script = {
        3: [{"type": "speech.started", "turn_id": 1}],
        28: answer(1, "what time is it", "It is noon.", sample_rate=24000),
    }
    async with running(script) as (gateway, url):
        result = await talk(tmp_path / "q.wav", url=url, out_path=tmp_path / "a.wav", timeout_s=10)

    assert result.transcript == "what time is it"
    assert result.reply_text == "It is noon."
    assert result.heard_text == "It is noon." and not result.interrupted
    assert result.reply_audio == REPLY * 2
    assert result.sample_rate == 24000
    assert result.first_audio_ms is not None and result.first_audio_ms >= 0
    assert result.total_ms is not None and result.total_ms >= 500
    assert all(len(frame) == FRAME for frame in gateway.frames)
    assert b"".join(gateway.frames[:25]) == pcm
    assert set(b"".join(gateway.frames[25:])) == {0}  # then silence, like an open microphone
    assert gateway.arrivals[24] - gateway.arrivals[0] >= 0.4  # real time, not a burst
    assert read_wav(tmp_path / "a.wav") == (REPLY * 2, 24000)
    # Playback of the whole reply (3200 bytes at 24 kHz) is reported once it has played out.
    assert played_reports(gateway) == [{"type": "audio.played", "turn_id": 1, "played_ms": 66.7}]


async def test_the_reply_is_played_out_in_real_time_before_the_end(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.2)  # 10 frames
    one_second = bytes(range(256)) * 125  # 32000 bytes: 1 s at 16 kHz, sent at once
    async with running({12: answer(1, "hi", "Hello there.", audio=one_second)}) as (gateway, url):
        conversation = await converse([tmp_path / "q.wav"], url=url, timeout_s=10)

    result = conversation.turns[0]
    audio_in = [entry.at for entry in conversation.trace if entry.type == "audio"]
    (report_at, report), *_ = [(at, r) for at, r in gateway.reports if r["type"] == "audio.played"]
    assert report == {"type": "audio.played", "turn_id": 1, "played_ms": 1000.0}
    assert report_at - audio_in[0] >= 0.95  # not before the last sample could have played
    assert result.played_ms == pytest.approx(1000) and not result.interrupted
    assert conversation.session_id == "s1"


async def test_playing_out_a_long_reply_does_not_count_against_the_timeout(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.1)  # 5 frames
    two_seconds = bytes(64000)
    async with running({7: answer(1, "hi", "A long reply.", audio=two_seconds)}) as (gateway, url):
        result = await talk(tmp_path / "q.wav", url=url, timeout_s=1.0)

    assert result.played_ms == pytest.approx(2000)
    assert played_reports(gateway) == [{"type": "audio.played", "turn_id": 1, "played_ms": 2000.0}]


async def test_audio_clear_stops_the_reply_and_reports_the_position(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.3)  # 15 frames
    interrupted: list[Step] = [
        {"type": "speech.started", "turn_id": 1},
        {"type": "transcript.final", "turn_id": 1, "text": "tell me"},
        {"type": "reply.text", "turn_id": 1, "seq": 0, "text": "Sure."},
        {"type": "audio.start", "turn_id": 1, "sample_rate": 16000},
        bytes(32000),  # 1 s: still playing when the user goes on talking
    ]
    barge: list[Step] = [
        {"type": "audio.clear", "turn_id": 1},
        b"\x07\x07" * 400,  # still in flight when the clear went out: must not count
        {"type": "speech.started", "turn_id": 2},
    ]
    truncated: list[Step] = [{"type": "reply.truncated", "turn_id": 1, "played_ms": 150, "text": "Sure."}]
    script: Script = {5: interrupted, 10: barge, 17: answer(2, "a joke", "Knock knock.")}
    async with running(script, played={1: truncated}) as (gateway, url):
        conversation = await converse([tmp_path / "q.wav"], url=url, timeout_s=10)

    (result,) = conversation.turns
    assert result.transcript == "tell me a joke"
    assert result.reply_text == "Knock knock."
    assert result.reply_audio == REPLY * 2
    assert result.turn_ids == (1, 2) and result.turn_id == 2
    reports = played_reports(gateway)
    assert [r["turn_id"] for r in reports] == [1, 2]
    assert 40 <= float(str(reports[0]["played_ms"])) <= 300  # 5 frames of the 1 s reply had played
    dropped = [entry for entry in conversation.trace if entry.type == "audio" and entry.turn_id is None]
    assert [entry.data["bytes"] for entry in dropped] == [800]


async def test_an_answer_before_the_file_ends_completes_when_it_ends(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q.wav", 0.3)  # 15 frames
    async with running({5: answer(1, "early", "Too soon.")}) as (gateway, url):
        result = await talk(tmp_path / "q.wav", url=url, timeout_s=10)

    assert result.reply_text == "Too soon."
    assert len(gateway.frames) in (15, 16)  # stopped as soon as the file was out (the reply had played)
    # The reply began before the file ended: the file carries trailing silence, so the latency is negative.
    assert result.first_audio_ms is not None and result.first_audio_ms < 0


# ---- several questions in one session


async def test_each_question_waits_until_the_previous_reply_has_played(tmp_path: Path) -> None:
    for name in ("q1", "q2", "q3"):
        tone_wav(tmp_path / f"{name}.wav", 0.2)  # 10 frames each
    half_second = bytes(16000)
    speech: Script = {
        1: [{"type": "speech.started", "turn_id": 1}],
        10: answer(1, "one", "Reply one.", audio=half_second),
        11: [{"type": "speech.started", "turn_id": 2}],
        20: answer(2, "two", "Reply two.", audio=half_second),
        21: [{"type": "speech.started", "turn_id": 3}],
        30: answer(3, "three", "Reply three."),
    }
    wavs = [tmp_path / f"{name}.wav" for name in ("q1", "q2", "q3")]
    async with running({}, speech=speech) as (gateway, url):
        conversation = await converse(wavs, url=url, timeout_s=10)

    assert [r.transcript for r in conversation.turns] == ["one", "two", "three"]
    assert [r.reply_text for r in conversation.turns] == ["Reply one.", "Reply two.", "Reply three."]
    assert all(not r.interrupted for r in conversation.turns)
    assert [r["turn_id"] for r in played_reports(gateway)] == [1, 2, 3]
    starts = [e.at for e in conversation.trace if e.type == "mic.start"]
    firsts = [next(e.at for e in conversation.trace if e.type == "audio" and e.turn_id == t) for t in (1, 2)]
    for first_audio, next_start in zip(firsts, starts[1:], strict=True):
        assert next_start - first_audio >= 0.48  # the half-second reply played out first
    audible = [i for i, frame in enumerate(gateway.frames) if any(frame)]
    assert len(audible) == 30 and audible[10] - audible[9] >= 20  # silence in between: the open microphone


async def test_barge_in_speaks_over_the_reply_and_reads_the_truncation(tmp_path: Path) -> None:
    tone_wav(tmp_path / "q1.wav", 0.2)
    tone_wav(tmp_path / "q2.wav", 0.2)
    speech: Script = {
        10: answer(1, "long story", "Once upon a time.", audio=bytes(64000)),  # 2 s of reply
        13: [{"type": "speech.started", "turn_id": 2}, {"type": "audio.clear", "turn_id": 1}],
        20: answer(2, "stop", "Okay then."),
    }
    played: Script = {1: [{"type": "reply.truncated", "turn_id": 1, "played_ms": 300, "text": "Once upon"}]}
    wavs = [tmp_path / "q1.wav", tmp_path / "q2.wav"]
    async with running({}, speech=speech, played=played) as (gateway, url):
        conversation = await converse(wavs, url=url, barge_in_ms=200, timeout_s=10)

    first, second = conversation.turns
    assert first.interrupted and first.heard_text == "Once upon" and first.total_ms is None
    assert first.reply_text == "Once upon a time."
    assert second.reply_text == "Okay then." and not second.interrupted
    assert second.first_audio_ms is not None and second.total_ms is not None
    reports = played_reports(gateway)
    assert [r["turn_id"] for r in reports] == [1, 2]
    # The second file began 200 ms after the first audio; the clear came 3 frames (60 ms) into it.
    assert 200 <= float(str(reports[0]["played_ms"])) <= 700
    start_2 = next(e.at for e in conversation.trace if e.type == "mic.start" and e.data["utterance"] == 1)
    first_audio = next(e.at for e in conversation.trace if e.type == "audio")
    assert 0.19 <= start_2 - first_audio <= 0.5


# ---- failures


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
        {"type": "some.future.event", "turn_id": 1},
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


# ---- the command line


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
    assert set(output) == {"transcript", "reply_text", "first_audio_ms", "total_ms"}  # as before
    assert output["reply_text"] == "Pong pong."


async def test_cli_prints_one_json_line_per_question(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tone_wav(tmp_path / "q1.wav", 0.2)
    tone_wav(tmp_path / "q2.wav", 0.2)
    speech: Script = {10: answer(1, "one", "Reply one."), 20: answer(2, "two", "Reply two.")}
    argv = [str(tmp_path / "q1.wav"), str(tmp_path / "q2.wav"), "--json", "--out", str(tmp_path / "r.wav")]
    async with running({}, speech=speech) as (_, url):
        code = await asyncio.to_thread(run, cli_args(*argv, "--url", url))

    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["transcript"] for line in lines] == ["one", "two"]
    assert set(lines[0]) == {
        "transcript", "reply_text", "heard_text", "interrupted", "first_audio_ms", "total_ms"
    }  # fmt: skip
    assert lines[1]["heard_text"] == "Reply two." and lines[1]["interrupted"] is False
    assert read_wav(tmp_path / "r-2.wav") == (REPLY * 2, 16000)


def test_cli_reports_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(cli_args(str(tmp_path / "missing.wav"), "--timeout", "1"))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("voxmesh talk: error:") and "Traceback" not in err
