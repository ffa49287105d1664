"""One client WebSocket: audio in to the ASR stream, events and reply audio out, turns owned here."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from services.gateway.events import (
    ClientEventError,
    Ping,
    ResponseCancel,
    error_event,
    parse_client_event,
    server_event,
)
from services.gateway.playout import ReplyAssembler
from services.gateway.ratelimit import TokenBucket
from services.gateway.settings import GatewaySettings
from shared import keys
from shared.audio import ASR_SAMPLE_RATE
from shared.bus import SESSION_TTL_SECONDS, Bus, StreamTail
from shared.metrics import GATEWAY_CLIENT_ERRORS, TURN_FIRST_AUDIO_SECONDS
from shared.schema import (
    AudioChunk,
    AudioFrame,
    Message,
    PhraseAudioDone,
    ReplyDone,
    ReplyPhrase,
    ReplyRequested,
    ServiceError,
    SessionClosed,
    SessionOpened,
    SpeechStarted,
    TranscriptFinal,
)
from shared.turns import open_turn

log = logging.getLogger(__name__)

_CLOSED_SESSION_TTL_S = 120


class GatewaySession:
    """Relays one client's audio to the bus and the bus's replies to the client.

    The turn number lives here: a new utterance (or a client cancel) opens a turn, which cancels every
    older turn's work across services; anything still arriving for an older turn is dropped here too.
    """

    def __init__(self, websocket: WebSocket, bus: Bus, settings: GatewaySettings, output_rate: int) -> None:
        self.ws = websocket
        self.bus = bus
        self.settings = settings
        self.output_rate = output_rate
        self.session_id = uuid.uuid4().hex
        self.turn = 0
        self.reply = ReplyAssembler(0)
        self._frame_seq = 0
        self._send_lock = asyncio.Lock()
        self._bucket = TokenBucket(rate=ASR_SAMPLE_RATE * 2 * settings.input_rate_factor, burst_s=1.0)
        self._last_rate_error = 0.0
        self._speech_ended_at = 0.0
        # Reply audio goes out faster than real time; the client plays it from a buffer until then.
        self._playback_ends_at = 0.0

    async def run(self) -> None:
        """Serve the session until the client leaves; always releases the session's work."""
        await self.bus.redis.set(keys.turn_counter(self.session_id), 0, ex=SESSION_TTL_SECONDS)
        await self.bus.send(keys.ASR_DISPATCH, SessionOpened(session_id=self.session_id, turn_id=0, seq=0))
        await self._send_json(
            server_event(
                "session.started",
                session_id=self.session_id,
                input_sample_rate=ASR_SAMPLE_RATE,
                output_sample_rate=self.output_rate,
            )  # fmt: skip
        )
        try:
            async with asyncio.TaskGroup() as group:
                relay = group.create_task(self._relay_out())
                await self._receive_in()
                relay.cancel()
        finally:
            await asyncio.shield(self._release())

    async def _release(self) -> None:
        closed = SessionClosed(session_id=self.session_id, turn_id=self.turn, seq=self._frame_seq)
        await self.bus.send_to_session(keys.audio_in(self.session_id), closed)
        await open_turn(self.bus.redis, self.session_id)  # stops any reply still being made
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            for key in keys.session_keys(self.session_id):
                pipe.expire(key, _CLOSED_SESSION_TTL_S)
            await pipe.execute()

    # ---- client → bus

    async def _receive_in(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=self.settings.idle_timeout_s)
            except TimeoutError:
                await self.ws.close(code=1000, reason="idle")
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await self._on_audio(message["bytes"])
            elif message.get("text") is not None:
                if not await self._on_text(message["text"]):
                    return

    async def _on_audio(self, pcm: bytes) -> None:
        if len(pcm) > self.settings.max_frame_bytes:
            await self._reject(
                "frame_too_large", f"audio frames are limited to {self.settings.max_frame_bytes} bytes"
            )
        elif len(pcm) % 2:
            await self._reject("bad_audio", "audio frames must be 16-bit PCM (even length)")
        elif not self._bucket.take(len(pcm)):
            now = time.monotonic()
            GATEWAY_CLIENT_ERRORS.labels(reason="rate_limited").inc()
            if now - self._last_rate_error > 1.0:  # one notice a second is enough
                self._last_rate_error = now
                await self._send_json(error_event("rate_limited", "audio arrives faster than real time"))
        elif pcm:
            frame = AudioFrame(session_id=self.session_id, turn_id=self.turn, seq=self._frame_seq, audio=pcm)
            self._frame_seq += 1
            await self.bus.send_to_session(keys.audio_in(self.session_id), frame)

    async def _on_text(self, text: str) -> bool:
        """Handle a client event; False when the client asked to close."""
        try:
            event = parse_client_event(text)
        except ClientEventError as exc:
            await self._reject(exc.code, exc.message)
            return True
        if isinstance(event, Ping):
            await self._send_json(server_event("pong"))
        elif isinstance(event, ResponseCancel):
            await self._new_turn()
        else:
            await self.ws.close(code=1000)
            return False
        return True

    async def _reject(self, code: str, message: str) -> None:
        GATEWAY_CLIENT_ERRORS.labels(reason=code).inc()
        await self._send_json(error_event(code, message))

    # ---- bus → client

    async def _relay_out(self) -> None:
        tail = StreamTail(self.bus, keys.session_out(self.session_id), label="session_out")
        try:
            while True:
                for delivery in await tail.read():
                    try:
                        await self._on_bus(delivery.message)
                    except Exception:
                        if self.ws.application_state != WebSocketState.CONNECTED:
                            return
                        log.exception("relay failed", extra={"session_id": self.session_id})
        finally:
            await tail.close()

    async def _on_bus(self, message: Message) -> None:
        if isinstance(message, SpeechStarted):
            await self._new_turn()
            await self._send_json(server_event("speech.started", turn_id=self.turn))
        elif isinstance(message, TranscriptFinal):
            await self._request_reply(message)
        elif message.turn_id != self.turn:
            return  # a stale turn's late output: in realtime, no answer beats an old one
        elif isinstance(message, ReplyPhrase):
            await self._send_json(
                server_event("reply.text", turn_id=self.turn, seq=message.seq, text=message.text)
            )
        elif isinstance(message, AudioChunk):
            await self._play(self.reply.add_chunk(message.phrase_seq, message.seq, message.audio))
        elif isinstance(message, PhraseAudioDone):
            await self._play(self.reply.phrase_done(message.phrase_seq, message.chunk_count))
        elif isinstance(message, ReplyDone):
            self.reply.reply_done(message.phrase_count)
            await self._play([])
        elif isinstance(message, ServiceError):
            await self._send_json(error_event(message.code, message.message, turn_id=message.turn_id))

    async def _new_turn(self) -> None:
        interrupted = self.reply.started and time.monotonic() < self._playback_ends_at
        old_turn = self.turn
        self.turn = await open_turn(self.bus.redis, self.session_id)
        self.reply = ReplyAssembler(self.turn)
        if interrupted:
            await self._send_json(server_event("audio.clear", turn_id=old_turn))

    async def _request_reply(self, message: TranscriptFinal) -> None:
        await self._send_json(server_event("transcript.final", turn_id=self.turn, text=message.text))
        self._speech_ended_at = message.speech_ended_at
        request = ReplyRequested(
            session_id=self.session_id, turn_id=self.turn, seq=0, text=message.text,
            output_sample_rate=self.output_rate, speech_ended_at=message.speech_ended_at,
        )  # fmt: skip
        await self.bus.send(keys.LLM_REQUESTS, request)

    async def _play(self, pieces: list[bytes]) -> None:
        if pieces and not self.reply.announced:
            self.reply.announced = True
            await self._send_json(
                server_event("audio.start", turn_id=self.turn, sample_rate=self.output_rate)
            )
            if self._speech_ended_at:
                TURN_FIRST_AUDIO_SECONDS.observe(max(0.0, time.time() - self._speech_ended_at))
        for pcm in pieces:
            await self._send_bytes(pcm)
            duration_s = len(pcm) / (2 * self.output_rate)
            self._playback_ends_at = max(self._playback_ends_at, time.monotonic()) + duration_s
        if self.reply.complete and not self.reply.ended:
            self.reply.ended = True
            await self._send_json(server_event("audio.end", turn_id=self.turn))

    async def _send_json(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_json(event)

    async def _send_bytes(self, pcm: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(pcm)
