"""The client's side of a WebRTC session (`voxmesh talk --webrtc`): the offer answered over HTTP, a
microphone track fed with 16 kHz PCM, events on the data channel, reply audio off the remote track.

`RtcLink` looks to the talk loop like its WebSocket: `send` (text: an event, bytes: microphone PCM),
iteration over what arrives (text events, reply PCM), and `close_code`/`close_reason`, which come from
the gateway's `session.closed` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from fractions import Fraction

import av
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH, StreamResampler

DEFAULT_OFFER_URL = "http://127.0.0.1:8000/v1/webrtc/offer"
TRACK_RATE = 48_000
_FRAME_SAMPLES = 960
_FRAME_BYTES = _FRAME_SAMPLES * SAMPLE_WIDTH
# Decoded Opus of digital silence is not exactly zero: quieter than this is no reply audio yet.
_SILENT_PEAK = 64
_CLOSE_S = 2.0


class LinkClosed(ConnectionError):
    """The peer connection or its data channel is gone."""


class LinkRefused(Exception):
    """The gateway refused the offer: its HTTP status and `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class PcmTrack(MediaStreamTrack):
    """A microphone made of PCM handed to `feed`: 20 ms frames at 48 kHz in real time, silence when
    nothing is queued."""

    kind = "audio"

    def __init__(self, sample_rate: int = ASR_SAMPLE_RATE) -> None:
        super().__init__()
        self._resampler = StreamResampler(sample_rate, TRACK_RATE)
        self._pending = bytearray()
        self._start: float | None = None
        self._pts = 0

    def feed(self, pcm: bytes) -> None:
        """Queue microphone PCM (at the rate given at construction)."""
        self._pending += self._resampler.process(pcm)

    async def recv(self) -> av.AudioFrame:
        """The next frame, when due."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += _FRAME_SAMPLES
            wait = self._start + self._pts / TRACK_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = bytes(self._pending[:_FRAME_BYTES])
        del self._pending[:_FRAME_BYTES]
        frame = av.AudioFrame(format="s16", layout="mono", samples=_FRAME_SAMPLES)
        frame.planes[0].update(chunk + bytes(_FRAME_BYTES - len(chunk)))
        frame.pts = self._pts
        frame.sample_rate = TRACK_RATE
        frame.time_base = Fraction(1, TRACK_RATE)
        return frame


class RtcLink:
    """One WebRTC session with the gateway, for the talk loop (use `open_link`)."""

    def __init__(self, output_rate: int = TRACK_RATE) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = PcmTrack()
        self.pc.addTrack(self.microphone)
        self.channel = self.pc.createDataChannel("voxmesh")
        self.output_rate = output_rate
        self.close_code: int | None = None
        self.close_reason = ""
        self.session_id: str | None = None
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._opened = asyncio.Event()
        self._in_reply = False  # between audio.start and audio.end: the remote track carries a reply
        self._heard_reply = False
        self.channel.on("open", self._opened.set)
        self.channel.on("message", self._on_message)
        self.channel.on("close", lambda: self._inbox.put_nowait(None))
        self.pc.on("track", self._on_track)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sounding: list[float] = []
        """When (monotonic) each frame with sound in it came off the remote track, reply or not."""

    async def connect(self, offer_url: str, token: str | None, timeout_s: float = 15.0) -> None:
        """Offer, take the answer, and wait for the data channel to open."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(trust_env=False, timeout=timeout_s) as client:
            body = {"type": offer.type, "sdp": offer.sdp}
            response = await client.post(offer_url, json=body, headers=headers)
        answer = response.json()
        if response.status_code != 200:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise LinkRefused(response.status_code, str(error.get("code")), str(error.get("message")))
        self.session_id = answer.get("session_id")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        async with asyncio.timeout(timeout_s):
            await self._opened.wait()

    async def send(self, message: str | bytes) -> None:
        """Text: an event on the data channel; bytes: 16 kHz PCM for the microphone track."""
        if isinstance(message, bytes):
            self.microphone.feed(message)
            return
        if self.channel.readyState != "open":
            raise LinkClosed("data channel closed")
        self.channel.send(message)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        while (message := await self._inbox.get()) is not None:
            yield message

    async def close(self) -> None:
        """Hang up."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.microphone.stop()
        # aiortc's close waits for a close already under way; one interrupted (Ctrl-C) never finishes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_S):
                await self.pc.close()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return
        with contextlib.suppress(ValueError):
            event = json.loads(message)
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "audio.start":
                self._in_reply, self._heard_reply = True, False
            elif kind in ("audio.end", "audio.clear"):
                self._in_reply = False
            elif kind == "session.closed":
                self.close_code, self.close_reason = int(event["code"]), str(event["reason"])
        self._inbox.put_nowait(message)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            task = asyncio.create_task(self._pump_remote(track))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump_remote(self, track: MediaStreamTrack) -> None:
        """The reply audio as the talk loop takes it: PCM at `output_rate` while a reply plays."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=self.output_rate)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            pcm = b"".join(out.to_ndarray().tobytes() for out in resampler.resample(frame))
            sound = _has_sound(pcm)
            if sound:
                self.sounding.append(time.monotonic())
            if not self._in_reply:
                continue
            if not self._heard_reply:
                if not sound:
                    continue  # the track's silence before the reply's first sound
                self._heard_reply = True
            self._inbox.put_nowait(pcm)


def _has_sound(pcm: bytes) -> bool:
    samples = np.frombuffer(pcm, dtype="<i2")
    return bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) >= _SILENT_PEAK


async def open_link(offer_url: str, token: str | None, timeout_s: float = 15.0) -> RtcLink:
    """A connected link (hung up again if connecting fails)."""
    link = RtcLink()
    try:
        await link.connect(offer_url, token, timeout_s)
    except BaseException:
        await link.close()
        raise
    return link
