"""One conversation over the realtime WebSocket, or over WebRTC (`webrtc=True`): the library API behind
`voxmesh talk`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from clients.talk.conversation import Conversation
from clients.talk.events import TalkError
from clients.talk.microphone import Microphone, Pacer
from clients.talk.rtc import LinkClosed, LinkRefused, open_link
from clients.talk.turns import TalkResult, TraceEntry
from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH, read_wav, to_mono16k, write_wav
from shared.auth import redact_token_logs

DEFAULT_URL = "ws://127.0.0.1:8000/v1/realtime"
SUBPROTOCOL = "voxmesh"
_RECONNECT_FIRST_S = 0.1
_RECONNECT_MAX_S = 2.0

log = logging.getLogger(__name__)


def token_subprotocols(token: str | None, resume: str | None = None) -> list[Subprotocol] | None:
    """What to offer in `Sec-WebSocket-Protocol`: "voxmesh", the session token if there is one, and the
    resume key of a session to resume."""
    if not token and not resume:
        return None
    redact_token_logs("websockets.client")  # it logs the handshake's headers at debug level
    offered = [Subprotocol(SUBPROTOCOL)]
    if token:
        offered.append(Subprotocol(f"token.{token}"))
    if resume:
        offered.append(Subprotocol(f"resume.{resume}"))
    return offered


class _Link(Protocol):
    """What the talk loop needs of its connection: the WebSocket, or a WebRTC `RtcLink`."""

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str | None: ...

    async def send(self, message: str | bytes) -> None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...


_CLOSED = (ConnectionClosed, LinkClosed)


def offer_url(url: str) -> str:
    """The gateway's WebRTC offer URL: `url` itself when http(s), else derived from its WebSocket URL."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return url
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/v1/webrtc/offer", "", ""))


@dataclass
class ConversationResult:
    """A whole scripted conversation: one result per spoken file, and everything that crossed the socket."""

    session_id: str
    turns: list[TalkResult]
    trace: list[TraceEntry]


async def _flush(ws: _Link, convo: Conversation) -> None:
    while convo.outbox:
        await ws.send(json.dumps(convo.outbox.popleft()))


@dataclass
class _Deadline:
    """Each file gets the whole timeout for its reply to arrive; playing a reply out never counts."""

    timeout: asyncio.Timeout
    timeout_s: float

    def restart(self) -> None:
        self.timeout.reschedule(asyncio.get_running_loop().time() + self.timeout_s)

    def allow_until(self, monotonic: float) -> None:
        # The event loop's clock is the monotonic clock.
        when = self.timeout.when()
        if when is not None and monotonic + 1.0 > when:
            self.timeout.reschedule(monotonic + 1.0)


async def _speak(ws: _Link, convo: Conversation, mic: Microphone, frame_ms: int, deadline: _Deadline) -> None:
    """Send the microphone's frames in real time until the last reply has played out."""
    pacer = Pacer(frame_ms / 1000.0)
    await convo.started.wait()
    index = mic.index
    try:
        while True:
            await pacer.wait()
            convo.tick(time.monotonic())
            await _flush(ws, convo)
            if mic.done:
                return
            if (ends_at := convo.playback_ends_at()) is not None:
                deadline.allow_until(ends_at)
            await ws.send(mic.next_frame(time.monotonic()))
            mic.sent(time.monotonic())
            if mic.index != index:
                index = mic.index
                deadline.restart()
    except _CLOSED:
        await asyncio.Event().wait()  # the receiver reports the close with its code


class _Dropped(TalkError):
    """The connection ended without the server closing it: the session can be resumed."""


def _dropped(ws: _Link) -> bool:
    """The WebSocket went without a close frame from the server (a WebRTC link is never resumed)."""
    protocol = getattr(ws, "protocol", None)
    return protocol is not None and protocol.close_rcvd is None


async def _receive(ws: _Link, convo: Conversation) -> None:
    """Feed every server message to the conversation; only cancellation ends this normally."""
    try:
        async for message in ws:
            if isinstance(message, bytes):
                convo.on_audio(message, time.monotonic())
            else:
                convo.on_text(message, time.monotonic())
                await _flush(ws, convo)  # report playback the moment it stopped
    except ConnectionClosed:
        pass
    if convo.resume_key is not None and _dropped(ws):
        raise _Dropped("the connection dropped")
    reason = f", {ws.close_reason}" if ws.close_reason else ""
    raise TalkError(f"the server closed the connection early (code {ws.close_code}{reason})")


async def _talk_over(
    ws: _Link, convo: Conversation, mic: Microphone, frame_ms: int, deadline: _Deadline
) -> None:
    async with asyncio.TaskGroup() as tasks:
        receiver = tasks.create_task(_receive(ws, convo))
        await _speak(ws, convo, mic, frame_ms, deadline)
        receiver.cancel()


async def _run(
    url: str,
    token: str | None,
    convo: Conversation,
    mic: Microphone,
    frame_ms: int,
    deadline: _Deadline,
    webrtc: bool = False,
) -> None:
    """Hold the conversation over one connection, and over new ones resuming the session when one drops
    (within the session's resume window; docs/protocol.md#resuming-a-session)."""
    if webrtc:
        await _run_webrtc(offer_url(url), token, convo, mic, frame_ms, deadline)
        return
    loop = asyncio.get_running_loop()
    dropped_at: float | None = None
    connections = 0
    backoff = _RECONNECT_FIRST_S
    while True:
        resume = convo.resume_key if dropped_at is not None else None
        try:
            await _connection(url, token, resume, convo, mic, frame_ms, deadline)
            return
        except (_Dropped, _Unreachable) as exc:
            if convo.connections > connections:  # the last drop was resumed: a new window for this one
                connections, dropped_at, backoff = convo.connections, None, _RECONNECT_FIRST_S
            if dropped_at is None:
                if not isinstance(exc, _Dropped):
                    raise
                dropped_at = loop.time()
                log.warning("connection dropped; resuming the session")
            if loop.time() + backoff > dropped_at + convo.resume_window_s:
                raise TalkError(
                    f"the connection dropped and the session could not be resumed ({exc})"
                ) from None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RECONNECT_MAX_S)


class _Unreachable(TalkError):
    """The gateway could not be reached or refused the handshake."""


async def _connection(
    url: str,
    token: str | None,
    resume: str | None,
    convo: Conversation,
    mic: Microphone,
    frame_ms: int,
    deadline: _Deadline,
) -> None:
    subprotocols = token_subprotocols(token, resume)
    try:
        # Compression would only cost CPU and latency on PCM.
        async with connect(url, compression=None, subprotocols=subprotocols) as ws:
            await _talk_over(ws, convo, mic, frame_ms, deadline)
    except InvalidStatus as exc:
        raise _Unreachable(f"{url} refused the WebSocket (HTTP {exc.response.status_code})") from None
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise _Unreachable(f"cannot connect to {url}: {exc}") from None
    except ExceptionGroup as group:
        raise _first_talk_error(group) from None


def _first_talk_error(group: ExceptionGroup[Exception]) -> Exception:
    """The TalkError a task raised rather than a group around it."""
    failures = group.subgroup(TalkError)
    if failures is None:
        return group
    first = failures.exceptions[0]
    return first if isinstance(first, TalkError) else group


async def _run_webrtc(
    url: str, token: str | None, convo: Conversation, mic: Microphone, frame_ms: int, deadline: _Deadline
) -> None:
    try:
        link = await open_link(url, token)
    except LinkRefused as exc:
        raise TalkError(f"{url} refused the WebRTC offer ({exc})") from None
    except httpx.HTTPError as exc:
        raise TalkError(f"cannot connect to {url}: {exc}") from None
    try:
        await _talk_over(link, convo, mic, frame_ms, deadline)
    except ExceptionGroup as group:
        raise _first_talk_error(group) from None
    finally:
        await link.close()


async def _load(path: Path) -> bytes:
    pcm, rate = await asyncio.to_thread(read_wav, path)
    pcm = await asyncio.to_thread(to_mono16k, pcm, rate)
    if not pcm:
        raise TalkError(f"{path} holds no audio")
    return pcm


async def converse_pcm(
    utterances: Sequence[bytes],
    *,
    url: str = DEFAULT_URL,
    barge_in_ms: float | None = None,
    timeout_s: float = 60.0,
    frame_ms: int = 20,
    token: str | None = None,
    webrtc: bool = False,
) -> ConversationResult:
    """Speak each 16 kHz PCM utterance in turn over one session; see `converse`."""
    if not 1 <= frame_ms <= 1000:
        raise ValueError(f"frame_ms must be within 1..1000 (the server takes at most 1 s), got {frame_ms}")
    convo = Conversation(utterances)
    mic = Microphone(convo, ASR_SAMPLE_RATE * frame_ms // 1000 * SAMPLE_WIDTH, barge_in_ms)
    try:
        async with asyncio.timeout(timeout_s) as timeout:
            await _run(url, token, convo, mic, frame_ms, _Deadline(timeout, timeout_s), webrtc)
    except TimeoutError:
        raise TalkError(f"no reply within {timeout_s:g} s ({convo.progress()})") from None
    assert convo.session_id is not None
    return ConversationResult(convo.session_id, convo.results(), convo.trace)


async def converse(
    wav_paths: Sequence[Path],
    *,
    url: str = DEFAULT_URL,
    barge_in_ms: float | None = None,
    timeout_s: float = 60.0,
    frame_ms: int = 20,
    token: str | None = None,
    webrtc: bool = False,
) -> ConversationResult:
    """Speak each WAV in turn over one session, like a person at an open microphone.

    Each file is spoken once the reply to the previous one has finished playing in real time, or, with
    `barge_in_ms`, that many milliseconds after its first reply audio arrived (talking over it). Each
    file must end where its speech ends: its end is taken as the end of speech. `timeout_s` applies to
    each file in turn (playing out a reply that has fully arrived does not count). `token` is a session
    token (`voxmesh token`), sent as a subprotocol; a gateway beyond loopback requires one. With
    `webrtc`, the session runs over WebRTC (`url` may be the WebSocket URL: the offer URL is derived).
    """
    pcms = [await _load(Path(path)) for path in wav_paths]
    return await converse_pcm(
        pcms, url=url, barge_in_ms=barge_in_ms, timeout_s=timeout_s, frame_ms=frame_ms, token=token,
        webrtc=webrtc,
    )  # fmt: skip


async def talk(
    wav_path: Path,
    *,
    url: str = DEFAULT_URL,
    out_path: Path | None = None,
    timeout_s: float = 60.0,
    frame_ms: int = 20,
    token: str | None = None,
    webrtc: bool = False,
) -> TalkResult:
    """Stream `wav_path` to the gateway in real time and return the reply it speaks back."""
    conversation = await converse(
        [wav_path], url=url, timeout_s=timeout_s, frame_ms=frame_ms, token=token, webrtc=webrtc
    )
    result = conversation.turns[0]
    if out_path is not None:
        await asyncio.to_thread(write_wav, out_path, result.reply_audio, result.sample_rate)
    return result
