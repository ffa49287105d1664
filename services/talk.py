"""`voxmesh talk`: speak a WAV file to the gateway like an open microphone and collect the spoken reply."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from shared.audio import (
    ASR_SAMPLE_RATE,
    SAMPLE_WIDTH,
    frames,
    pcm_duration_ms,
    read_wav,
    to_mono16k,
    write_wav,
)

DEFAULT_URL = "ws://127.0.0.1:8000/v1/realtime"
# Further behind schedule than this means the event loop stalled: bursting the backlog could trip the
# server's 1.5x real-time input limit, so the schedule restarts from now instead.
_MAX_LAG_S = 0.1

log = logging.getLogger(__name__)


class TalkError(Exception):
    """The conversation failed: a server error, an early close, or no reply in time."""


@dataclass
class TalkResult:
    """What one spoken question got back, and how fast."""

    transcript: str
    reply_text: str
    first_audio_ms: float | None
    total_ms: float
    reply_audio: bytes
    sample_rate: int


# Server events this client acts on (docs/protocol.md). Extra fields are ignored so the server may grow.
class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _SessionStarted(_Event):
    type: Literal["session.started"]
    session_id: str
    output_sample_rate: int


class _TurnEvent(_Event):
    type: Literal["speech.started", "audio.clear", "audio.end"]
    turn_id: int


class _TranscriptFinal(_Event):
    type: Literal["transcript.final"]
    turn_id: int
    text: str


class _ReplyText(_Event):
    type: Literal["reply.text"]
    turn_id: int
    seq: int
    text: str


class _AudioStart(_Event):
    type: Literal["audio.start"]
    turn_id: int
    sample_rate: int


class _Error(_Event):
    type: Literal["error"]
    code: str
    message: str
    turn_id: int | None = None


_ServerEvent: TypeAlias = Annotated[
    _SessionStarted | _TurnEvent | _TranscriptFinal | _ReplyText | _AudioStart | _Error,
    Field(discriminator="type"),
]
_EVENTS: TypeAdapter[_ServerEvent] = TypeAdapter(_ServerEvent)


def _parse(text: str) -> _ServerEvent | None:
    """Typed server event, or None for a type this client does not use (such as `pong`)."""
    try:
        return _EVENTS.validate_json(text)
    except ValidationError as exc:
        if all(error["type"] == "union_tag_invalid" for error in exc.errors()):
            return None
        raise TalkError(f"malformed server event: {text[:200]}") from exc


@dataclass
class _Turn:
    phrases: dict[int, str] = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray)
    sample_rate: int | None = None
    first_audio_at: float | None = None
    ended_at: float | None = None
    cleared: bool = False


@dataclass
class _Conversation:
    """The client's view of the session: which turn is current and what each turn has said."""

    output_sample_rate: int = 16000
    newest_turn: int = -1  # a reply from an older turn is stale
    answer_turn: int | None = None  # turn of the latest transcript: the reply we wait for
    audio_turn: int | None = None  # turn that incoming binary frames belong to (set by audio.start)
    transcripts: list[str] = field(default_factory=list)
    turns: dict[int, _Turn] = field(default_factory=dict)
    first_sent_at: float | None = None
    file_sent_at: float | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def turn(self, turn_id: int) -> _Turn:
        return self.turns.setdefault(turn_id, _Turn())

    def on_event(self, event: _ServerEvent, now: float) -> None:
        match event:
            case _SessionStarted():
                self.output_sample_rate = event.output_sample_rate
                self.started.set()
            case _TurnEvent(type="speech.started"):
                self._advance(event.turn_id)
            case _TurnEvent(type="audio.clear"):
                self._clear(event.turn_id)
            case _TurnEvent():
                self.turn(event.turn_id).ended_at = now
                if self.audio_turn == event.turn_id:
                    self.audio_turn = None
            case _TranscriptFinal():
                self._advance(event.turn_id)
                if event.text.strip():
                    self.transcripts.append(event.text.strip())
                self.answer_turn = max(event.turn_id, -1 if self.answer_turn is None else self.answer_turn)
            case _ReplyText():
                self.turn(event.turn_id).phrases[event.seq] = event.text.strip()
            case _AudioStart():
                if event.turn_id >= self.newest_turn and not self.turn(event.turn_id).cleared:
                    self._advance(event.turn_id)
                    self.audio_turn = event.turn_id
                    self.turn(event.turn_id).sample_rate = event.sample_rate
            case _Error():
                self._error(event)
        self.check_finished()

    def on_audio(self, pcm: bytes, now: float) -> None:
        if self.audio_turn is None:
            return  # audio of a cleared or stale turn still in flight
        turn = self.turn(self.audio_turn)
        if turn.first_audio_at is None:
            turn.first_audio_at = now
        turn.audio += pcm

    def check_finished(self) -> None:
        """Done once the whole file is sent and the current answer has been fully spoken."""
        answer = self.answer_turn
        if self.file_sent_at is None or answer is None or answer < self.newest_turn:
            return
        turn = self.turn(answer)
        if turn.ended_at is not None and not turn.cleared:
            self.finished.set()

    def progress(self) -> str:
        """Where the conversation got stuck, for a timeout message."""
        if not self.started.is_set():
            return "no session.started"
        if self.answer_turn is None:
            return "no transcript.final"
        return f"heard {' '.join(self.transcripts)!r}, no audio.end for turn {self.answer_turn}"

    def _clear(self, turn_id: int) -> None:
        turn = self.turn(turn_id)
        turn.audio.clear()
        turn.first_audio_at = None
        turn.cleared = True
        if self.audio_turn == turn_id:
            self.audio_turn = None

    def _error(self, event: _Error) -> None:
        # A failure of a turn the user already talked over changes nothing for this conversation.
        stale = event.turn_id is not None and event.turn_id < self.newest_turn
        if event.code == "turn_failed" and not stale:
            raise TalkError(f"the server could not answer (turn_failed: {event.message})")
        log.warning("server error event %s: %s", event.code, event.message)

    def _advance(self, turn_id: int) -> None:
        self.newest_turn = max(self.newest_turn, turn_id)
        if self.audio_turn is not None and self.audio_turn < turn_id:
            self.audio_turn = None

    def result(self) -> TalkResult:
        answer = self.answer_turn
        assert answer is not None and self.first_sent_at is not None and self.file_sent_at is not None
        turn = self.turn(answer)
        assert turn.ended_at is not None
        first = turn.first_audio_at
        return TalkResult(
            transcript=" ".join(self.transcripts),
            reply_text=" ".join(text for _, text in sorted(turn.phrases.items()) if text),
            first_audio_ms=None if first is None else (first - self.file_sent_at) * 1000.0,
            total_ms=(turn.ended_at - self.first_sent_at) * 1000.0,
            reply_audio=bytes(turn.audio),
            sample_rate=turn.sample_rate or self.output_sample_rate,
        )


class _Pacer:
    """Real-time schedule: frame n is due at origin + n * period on the monotonic clock, so no drift."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.origin: float | None = None
        self.count = 0

    async def wait(self) -> None:
        now = time.monotonic()
        if self.origin is None:
            self.origin = now
        due = self.origin + self.count * self.period_s
        if now - due > _MAX_LAG_S:
            self.origin, due = now - self.count * self.period_s, now
        self.count += 1
        if due > now:
            await asyncio.sleep(due - now)


async def _stream(ws: ClientConnection, pcm: bytes, convo: _Conversation, frame_ms: int) -> None:
    """Send the file, then silence like an open microphone, each frame in real time, until finished."""
    frame_bytes = ASR_SAMPLE_RATE * frame_ms // 1000 * SAMPLE_WIDTH
    pacer = _Pacer(frame_ms / 1000.0)
    await convo.started.wait()
    try:
        for frame in frames(pcm, frame_bytes):
            await pacer.wait()
            await ws.send(frame)
            if convo.first_sent_at is None:
                convo.first_sent_at = time.monotonic()
        convo.file_sent_at = time.monotonic()
        convo.check_finished()  # the answer may already be complete
        silence = bytes(frame_bytes)
        while not convo.finished.is_set():
            await pacer.wait()
            await ws.send(silence)
    except ConnectionClosed:
        pass  # the receiver reports the close with its code


async def _receive(ws: ClientConnection, convo: _Conversation) -> None:
    """Feed every server message to the conversation; only cancellation ends this normally."""
    try:
        async for message in ws:
            if isinstance(message, bytes):
                convo.on_audio(message, time.monotonic())
            elif (event := _parse(message)) is not None:
                convo.on_event(event, time.monotonic())
    except ConnectionClosed:
        pass
    reason = f", {ws.close_reason}" if ws.close_reason else ""
    raise TalkError(f"the server closed the connection early (code {ws.close_code}{reason})")


async def _converse(url: str, pcm: bytes, convo: _Conversation, frame_ms: int) -> None:
    try:
        # Compression would only cost CPU and latency on PCM.
        async with connect(url, compression=None) as ws:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_stream(ws, pcm, convo, frame_ms))
                receiver = tasks.create_task(_receive(ws, convo))
                await convo.finished.wait()
                receiver.cancel()  # the sender sees `finished` and stops by itself
    except InvalidStatus as exc:
        raise TalkError(f"{url} refused the WebSocket (HTTP {exc.response.status_code})") from None
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise TalkError(f"cannot connect to {url}: {exc}") from None
    except ExceptionGroup as group:
        # Surface the TalkError a task raised rather than a group around it.
        failures = group.subgroup(TalkError)
        if failures is None:
            raise
        first = failures.exceptions[0]
        raise (first if isinstance(first, TalkError) else group) from None


async def talk(
    wav_path: Path,
    *,
    url: str = DEFAULT_URL,
    out_path: Path | None = None,
    timeout_s: float = 60.0,
    frame_ms: int = 20,
) -> TalkResult:
    """Stream `wav_path` to the gateway in real time and return the reply it speaks back."""
    if not 1 <= frame_ms <= 1000:
        raise ValueError(f"frame_ms must be within 1..1000 (the server takes at most 1 s), got {frame_ms}")
    pcm, rate = await asyncio.to_thread(read_wav, wav_path)
    pcm = await asyncio.to_thread(to_mono16k, pcm, rate)
    if not pcm:
        raise TalkError(f"{wav_path} holds no audio")
    convo = _Conversation()
    try:
        async with asyncio.timeout(timeout_s):
            await _converse(url, pcm, convo, frame_ms)
    except TimeoutError:
        raise TalkError(f"no reply within {timeout_s:g} s ({convo.progress()})") from None
    result = convo.result()
    if out_path is not None:
        await asyncio.to_thread(write_wav, out_path, result.reply_audio, result.sample_rate)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `voxmesh talk` arguments."""
    parser.add_argument("wav", type=Path, help="question as a WAV file (any rate, any channels)")
    parser.add_argument("--out", type=Path, default=None, help="write the spoken reply to this WAV file")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")


def run(args: argparse.Namespace) -> int:
    """Run `voxmesh talk` with parsed arguments; returns the process exit code."""
    try:
        result = asyncio.run(talk(args.wav, url=args.url, out_path=args.out, timeout_s=args.timeout))
    except (TalkError, ValueError, OSError) as exc:
        print(f"voxmesh talk: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    first = None if result.first_audio_ms is None else round(result.first_audio_ms, 1)
    if args.json:
        summary = {
            "transcript": result.transcript,
            "reply_text": result.reply_text,
            "first_audio_ms": first,
            "total_ms": round(result.total_ms, 1),
        }
        print(json.dumps(summary))
        return 0
    seconds = pcm_duration_ms(result.reply_audio, result.sample_rate) / 1000.0
    print(f"you said:    {result.transcript}")
    print(f"reply:       {result.reply_text}")
    print(f"first audio: {'-' if first is None else f'{first:.0f} ms'} after the end of the file")
    print(f"total:       {result.total_ms:.0f} ms")
    print(
        f"audio:       {seconds:.2f} s at {result.sample_rate} Hz" + (f" -> {args.out}" if args.out else "")
    )
    return 0
