"""A WebRTC peer connection seen as the session's WebSocket (`WebSocketLike`), so a WebRTC session runs the
very same `GatewaySession` as a WebSocket one: same events, limits, turns and barge-in.

In: the microphone track, decoded to 16 kHz PCM, arrives as binary messages; data-channel text arrives
as text messages. Out: JSON events go on the data channel; reply audio goes into the outgoing track,
which plays it in real time. The track knows what was played, so on `audio.clear` (and when a turn's
audio has all played) this socket reports `audio.played` to the session as a client would; the
client's own `audio.played` reports are not needed and are dropped. `audio.end` goes to the client
when the track has played the turn's audio, not when the last of it was queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from starlette.types import Message
from starlette.websockets import WebSocketState

from services.gateway.events import error_event, server_event
from services.gateway.rtc_media import MicrophoneAudio, ReplyAudioTrack
from shared.metrics import GATEWAY_CLIENT_ERRORS

log = logging.getLogger(__name__)

_DISCONNECT: Message = {"type": "websocket.disconnect", "code": 1000}
MAX_PENDING_AUDIO = 100
"""Microphone frames (20 ms each) waiting for the session; more are dropped (the session is stalled)."""
MAX_PENDING_TEXT = 64
"""Data-channel messages waiting for the session; a flood beyond that is dropped (and counted)."""
PLAYOUT_WAIT_S = 15.0
"""How long a session closed with 1001 (a draining gateway) may play out the reply its track holds."""
_CLOSE_FLUSH_S = 1.0
_AUDIO_PLAYED = '"audio.played"'
_SEND_POLL_S = 0.02


class RtcSocket:
    """One peer connection, its data channel and its audio tracks, as the session's socket."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        microphone: MicrophoneAudio,
        *,
        max_message_bytes: int,
        max_buffered_bytes: int,
    ) -> None:
        self.pc = pc
        self.microphone = microphone
        self.track = ReplyAudioTrack(self._turn_played)
        self.channel: RTCDataChannel | None = None
        self.max_message_bytes = max_message_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._pending_audio = 0
        self._pending_text = 0
        self._last_notice = 0.0
        self._last_drop_log = 0.0
        self._state = WebSocketState.CONNECTING
        self._opened = asyncio.Event()
        self._early: list[str] = []  # events sent before the data channel opened
        self._held_ends: dict[int, str] = {}
        self._closing = False
        self._hurry = asyncio.Event()
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    # ---- WebSocketLike

    @property
    def application_state(self) -> WebSocketState:
        """CONNECTED from the offer's answer until either side closes."""
        return self._state

    async def receive(self) -> Message:
        """The next microphone frame or data-channel event, or a disconnect."""
        if self._state == WebSocketState.DISCONNECTED and self._inbox.empty():
            return _DISCONNECT
        message = await self._inbox.get()
        if "bytes" in message:
            self._pending_audio -= 1
        elif "text" in message:
            self._pending_text -= 1
        return message

    async def send_json(self, data: Any) -> None:
        """Send one event on the data channel; reply-audio events also steer the outgoing track."""
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if isinstance(data, dict) and self._steer_track(data, text):
            return  # an audio.end held until the track has played the turn
        await self._send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        """Queue reply audio on the outgoing track (it plays it in real time)."""
        if self._state == WebSocketState.DISCONNECTED:
            raise ConnectionResetError("peer connection closed")
        if not self.track.add(data) and time.monotonic() - self._last_drop_log > 1.0:
            self._last_drop_log = time.monotonic()
            log.warning("reply audio dropped: no turn on the track, or its queue is full")

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Tell the client why (`session.closed`: the WebSocket's close code and reason), then hang up.

        Going away (1001, a draining gateway) first lets the track play out the reply it holds (up to
        `PLAYOUT_WAIT_S`); a second close while that wait runs ends it at once.
        """
        if self._state == WebSocketState.DISCONNECTED:
            return
        if self._closing:
            self._hurry.set()
            return
        self._closing = True
        if code == 1001:
            await self._play_out(PLAYOUT_WAIT_S)
        try:
            await self._send_text(json.dumps(server_event("session.closed", code=code, reason=reason or "")))
            await self._drain_channel(_CLOSE_FLUSH_S)
        except ConnectionError:
            pass
        await self.hang_up()

    # ---- the connection

    def start(self) -> None:
        """The answer is out: the session may now send (queued until the data channel opens)."""
        self._state = WebSocketState.CONNECTED

    async def wait_open(self, timeout_s: float) -> bool:
        """Whether the client's data channel opened within `timeout_s` (ICE and DTLS done)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._opened.wait()
        except TimeoutError:
            return False
        return self._state != WebSocketState.DISCONNECTED

    async def pump_microphone(self) -> None:
        """Feed the microphone's frames to the session until the track ends (then the session ends)."""
        while True:
            try:
                pcm = await self.microphone.read()
            except MediaStreamError:
                self._disconnected()
                return
            if not pcm:
                continue
            if self._pending_audio >= MAX_PENDING_AUDIO:
                GATEWAY_CLIENT_ERRORS.labels(reason="audio_overflow").inc()
                continue
            self._pending_audio += 1
            self._inbox.put_nowait({"type": "websocket.receive", "bytes": pcm})

    async def hang_up(self) -> None:
        """Close the peer connection (idempotent)."""
        self._disconnected()
        self.track.stop()
        # aiortc's close waits for a close already under way; one that was interrupted never finishes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_FLUSH_S * 2):
                await self.pc.close()

    # ---- internals

    def _steer_track(self, event: dict[str, Any], text: str) -> bool:
        """Apply a reply-audio event to the track; True when the event is held (an audio.end)."""
        kind = event.get("type")
        turn_id = event.get("turn_id")
        if not isinstance(turn_id, int):
            return False
        if kind == "audio.start":
            self.track.begin(turn_id, int(event["sample_rate"]))
        elif kind == "audio.end" and self.track.end(turn_id):
            self._held_ends[turn_id] = text
            return True
        elif kind == "audio.clear":
            played = self.track.clear(turn_id)
            if played is not None:
                self._turn_played(turn_id, played)
        return False

    def _turn_played(self, turn_id: int, played_ms: float) -> None:
        """What the track played of a turn, told to the session as the client's `audio.played`; the
        client now gets the turn's `audio.end` if it was held."""
        report = {"type": "audio.played", "turn_id": turn_id, "played_ms": round(played_ms, 1)}
        self._inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(report)})
        self._pending_text += 1
        end = self._held_ends.pop(turn_id, None)
        channel = self.channel
        if end is not None and channel is not None and channel.readyState == "open":
            channel.send(end)

    async def _send_text(self, text: str) -> None:
        if self._state == WebSocketState.DISCONNECTED:
            raise ConnectionResetError("peer connection closed")
        channel = self.channel
        if channel is None or channel.readyState == "connecting":
            self._early.append(text)
            return
        if channel.readyState != "open":
            raise ConnectionResetError("data channel closed")
        # A client that stops reading: wait (the session's outbound queue bounds this wait).
        while channel.bufferedAmount > self.max_buffered_bytes:
            await asyncio.sleep(_SEND_POLL_S)
            if channel.readyState != "open":
                raise ConnectionResetError("data channel closed")
        channel.send(text)

    async def _play_out(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.track.queued_bytes() and not self._hurry.is_set() and time.monotonic() < deadline:
            if self._state == WebSocketState.DISCONNECTED:
                return
            try:
                async with asyncio.timeout(_SEND_POLL_S * 5):
                    await self._hurry.wait()
            except TimeoutError:
                pass

    async def _drain_channel(self, timeout_s: float) -> None:
        channel = self.channel
        deadline = time.monotonic() + timeout_s
        while channel is not None and channel.readyState == "open" and channel.bufferedAmount:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(_SEND_POLL_S)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:
            channel.close()  # one data channel per session: the protocol's
            return
        self.channel = channel
        channel.on("open", self._on_open)
        channel.on("message", self._on_message)
        channel.on("close", self._disconnected)
        if channel.readyState == "open":
            self._on_open()

    def _on_open(self) -> None:
        channel = self.channel
        assert channel is not None
        for text in self._early:
            channel.send(text)
        self._early.clear()
        self._opened.set()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._notice("bad_event", "the data channel carries JSON text; audio goes on the audio track")
            return
        if len(message.encode()) > self.max_message_bytes:
            limit = self.max_message_bytes
            self._notice("message_too_large", f"data-channel messages are limited to {limit} bytes")
            return
        if _AUDIO_PLAYED in message and _event_type(message) == "audio.played":
            return  # the track's own count is what was played
        if self._pending_text >= MAX_PENDING_TEXT:
            self._notice("rate_limited", "data-channel messages arrive faster than allowed")
            return
        self._pending_text += 1
        self._inbox.put_nowait({"type": "websocket.receive", "text": message})

    def _notice(self, code: str, message: str) -> None:
        """An error the session never sees (it never got the message): at most one a second."""
        GATEWAY_CLIENT_ERRORS.labels(reason=code).inc()
        now = time.monotonic()
        channel = self.channel
        if now - self._last_notice > 1.0 and channel is not None and channel.readyState == "open":
            self._last_notice = now
            channel.send(json.dumps(error_event(code, message)))

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._disconnected()

    def _disconnected(self) -> None:
        if self._state != WebSocketState.DISCONNECTED:
            self._state = WebSocketState.DISCONNECTED
            self._opened.set()
            self._inbox.put_nowait(_DISCONNECT)


def _event_type(text: str) -> object:
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return event.get("type") if isinstance(event, dict) else None
