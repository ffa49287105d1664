"""One client session (a WebSocket, or WebRTC through `RtcSocket`): audio in to the ASR stream, events
and reply audio out, turns owned here."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from starlette.websockets import WebSocketState

from services.gateway.admission import wait_taken
from services.gateway.continuity import Continuity
from services.gateway.conversation import Conversation
from services.gateway.events import (
    AudioPlayed,
    ClientEventError,
    Ping,
    ResponseCancel,
    SessionUpdate,
    SessionUsageRequest,
    error_event,
    parse_client_event,
    server_event,
)
from services.gateway.inbound import Inbound, InboundWriter
from services.gateway.outbound import ClientSocket, WebSocketLike
from services.gateway.playback import ReplyTrack
from services.gateway.prefill import hint_prefill
from services.gateway.ratelimit import TokenBucket
from services.gateway.resume import CLOSED_SESSION_TTL_S, Claimed, Resumes
from services.gateway.settings import GatewaySettings
from services.gateway.usage import SessionUsage
from shared import keys
from shared.audio import ASR_SAMPLE_RATE
from shared.bus import Bus, StreamTail
from shared.history import HistoryEntry, append_history
from shared.metrics import GATEWAY_CLIENT_ERRORS, TURN_FIRST_AUDIO_SECONDS, USAGE_BUDGET_REACHED
from shared.schema import (
    AudioChunk,
    AudioFrame,
    Message,
    PhraseAudioDone,
    ReplyDone,
    ReplyPhrase,
    ReplyRequested,
    ReplyUsage,
    ServiceError,
    SessionClosed,
    SpeechResumed,
    SpeechStarted,
    SpeechSustained,
    TranscriptFinal,
    TranscriptPartial,
    TranscriptSpeculative,
)
from shared.turns import open_turn

log = logging.getLogger(__name__)

_LOST = (1005, 1006)
# A reply with no output for this long is given up (longer than a dead replica's work takes to be taken
# over, VOXMESH_*_CLAIM_IDLE_MS, 15 s by default).
REPLY_STALL_S = 30.0


class GatewaySession:
    """Relays one client's audio to the bus and the bus's replies to the client.

    The turn logic lives in `Conversation`; this class is its I/O: the socket, the bus and Redis.
    """

    def __init__(
        self, websocket: WebSocketLike, bus: Bus, settings: GatewaySettings, output_rate: int,
        *, resumes: Resumes | None = None, subject: str = "", claimed: Claimed | None = None,
        address: str = "", inbound_writer: InboundWriter | None = None,
    ) -> None:  # fmt: skip
        self.session_id = claimed.session_id if claimed is not None else uuid.uuid4().hex
        self.ws = ClientSocket(
            websocket, max_queued_bytes=settings.outbound_queue_bytes,
            stall_s=settings.client_read_timeout_s, session_id=self.session_id,
        )  # fmt: skip
        self.bus = bus
        self.settings = settings
        self.conversation = Conversation(self, output_rate)
        self.instructions = ""
        self.economy = settings.economy
        self.usage = SessionUsage(bus.redis, self.session_id, token_budget=settings.session_token_budget)
        self.frame_seq = 0
        self._send_lock = asyncio.Lock()
        self.inbound = Inbound(bus, keys.audio_in(self.session_id), writer=inbound_writer)
        """Client → ASR writes, in order, off the receive loop (services/gateway/inbound.py)."""
        self._bucket = TokenBucket(rate=ASR_SAMPLE_RATE * 2 * settings.input_rate_factor, burst_s=1.0)
        self._text_bucket = TokenBucket(
            rate=settings.text_events_per_s, burst_s=settings.text_burst / settings.text_events_per_s
        )
        self._last_rate_error = 0.0
        self._last_in = 0.0
        """When the client last sent anything (monotonic): the idle timeout counts from it."""
        self._speech_ended_at: dict[int, float] = {}
        # Last: a resumed session takes up its parked state here.
        self.continuity = Continuity(self, resumes, subject, claimed, address)

    @property
    def turn(self) -> int:
        """The session's current turn."""
        return self.conversation.turn

    @property
    def replying(self) -> bool:
        """A reply of the current turn is still being made or sent (a draining gateway waits for it)."""
        reply = self.conversation.reply
        if reply is None or reply.failed or reply.assembler.ended:
            return False
        return reply.work_id == self.conversation.work

    async def run(self) -> None:
        """Serve the session until the client leaves; always releases the session's work."""
        try:
            # Inside the try: once the ASR may have the session, it must hear of its end whatever happens.
            opened = await self.continuity.open()
            await self.send(
                server_event(
                    "session.started",
                    session_id=self.session_id,
                    input_sample_rate=ASR_SAMPLE_RATE,
                    output_sample_rate=self.conversation.sample_rate,
                    turn_id=self.turn,
                    **self.continuity.started_fields(),
                )  # fmt: skip
            )
            async with asyncio.TaskGroup() as group:
                # Sent before this, session.started went straight out; from here on, through the queue.
                writer = group.create_task(self.ws.start())
                inbound = group.create_task(self.inbound.run())
                relay = group.create_task(self._relay_out())
                admission = None if opened is None else group.create_task(self._await_asr(opened))
                await self._receive_in()
                await self.inbound.flush()  # SessionClosed (or parking) comes after the last frame
                inbound.cancel()
                relay.cancel()
                if admission is not None:
                    admission.cancel()
                await self.ws.flush()
                writer.cancel()
        finally:
            await asyncio.shield(self._release())

    async def _release(self) -> None:
        if await self.continuity.park():
            return  # kept for the client to resume; ended by `Resumes` once its window is over
        closed = SessionClosed(session_id=self.session_id, turn_id=self.turn, seq=self.frame_seq)
        await self.bus.send_to_session(keys.audio_in(self.session_id), closed)
        await self.open_turn()  # stops any reply still being made
        await self.usage.save()
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            for key in keys.session_keys(self.session_id):
                pipe.expire(key, CLOSED_SESSION_TTL_S)
            await pipe.execute()

    # ---- Effects for the conversation

    async def open_turn(self) -> int:
        """Raise the turn in Redis and broadcast the cancel of everything older."""
        return await open_turn(self.bus.redis, self.session_id, above=self.conversation.work)

    async def send(self, event: dict[str, Any]) -> None:
        """Send one JSON event to the client."""
        async with self._send_lock:
            await self.ws.send_json(event)

    async def request_reply(self, work_id: int, text: str, speech_ended_at: float) -> None:
        """Queue the reply request for the LLM service (refused once a session over its budget may have no
        more replies)."""
        self._speech_ended_at = {work_id: speech_ended_at}
        await self.continuity.check(now=True, sparing=work_id)  # the LLM reads the history Redis holds
        if self.usage.budget_reached and self.settings.budget_action == "refuse":
            await self._refuse_reply(work_id)
            return
        request = ReplyRequested(
            session_id=self.session_id, turn_id=work_id, seq=0, text=text,
            output_sample_rate=self.conversation.sample_rate, speech_ended_at=speech_ended_at,
            instructions=self.instructions, economy=self.economy,
        )  # fmt: skip
        await self.bus.send(keys.LLM_REQUESTS, request)

    async def _refuse_reply(self, work_id: int) -> None:
        """The reply ends at once with `budget_exceeded` (held back like any output of a speculation)."""
        refusal = ServiceError(
            session_id=self.session_id, turn_id=work_id, seq=0, code="budget_exceeded",
            message="the session has used its token budget",
        )  # fmt: skip
        reply = self.conversation.current_reply(work_id)
        if reply is not None:
            if reply.speculation is not None:
                reply.held.append(refusal)
            else:
                await self._deliver(reply, refusal)

    async def release(self, reply: ReplyTrack) -> None:
        """Deliver what a speculative reply produced while it was held back, in order."""
        held, reply.held = reply.held, []
        for message in held:
            await self._deliver(reply, message)

    async def commit(self, entries: list[HistoryEntry]) -> None:
        """Append to the session's history in Redis."""
        self.continuity.remember(entries)
        await append_history(self.bus.redis, self.session_id, entries)

    # ---- usage

    async def _charge(self, turn_id: int, report: ReplyUsage) -> None:
        """Add a released reply's usage to the session; at the token budget, apply the budget action."""
        if not await self.usage.add_reply(turn_id, report):
            return
        action = self.settings.budget_action
        USAGE_BUDGET_REACHED.labels(action=action).inc()
        log.info("session reached its token budget", extra={"session_id": self.session_id})
        if action == "economy" and not self.economy:
            self.economy = True
            await self.send(server_event("session.updated", session=self._options(), reason="budget_reached"))

    async def _send_usage(self) -> None:
        """Save the usage and send it to the client (`session.usage`)."""
        await self.usage.save()
        await self.send(self.usage.event())

    async def _await_asr(self, opened: bytes) -> None:
        """Tell the client, and close, when no ASR replica takes the session in time (all are full)."""
        if await wait_taken(self.bus, opened, self.settings.asr_admission_timeout_s):
            return
        log.warning("no ASR replica took the session", extra={"session_id": self.session_id})
        GATEWAY_CLIENT_ERRORS.labels(reason="asr_busy").inc()
        await self.send(error_event("server_busy", "no speech recognizer is free; try again later"))
        await self.ws.close(code=1013, reason="try again later")

    # ---- client → bus

    async def _receive_in(self) -> None:
        self._last_in = time.monotonic()
        # One watchdog for the idle timeout rather than a timeout around every receive (a timer armed and
        # cancelled per 20 ms frame was ~8 % of the gateway's CPU at 40 sessions).
        idle = asyncio.get_running_loop().create_task(self._close_when_idle())
        try:
            await self._receive_until_closed()
        finally:
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)

    async def _close_when_idle(self) -> None:
        limit_s = self.settings.idle_timeout_s
        # Sleeps until the deadline as it stands, then looks again (a frame since has moved it).
        while True:
            left_s = self._last_in + limit_s - time.monotonic()
            if left_s <= 0:
                break
            await asyncio.sleep(left_s)
        await self._send_usage()
        await self.ws.close(code=1000, reason="idle")  # the client's disconnect then ends the receive loop

    async def _receive_until_closed(self) -> None:
        while True:
            message = await self.ws.receive()
            self._last_in = time.monotonic()
            if message["type"] == "websocket.disconnect":
                # A drop, not an end: the server had not closed it, and the connection was lost (uvicorn says
                # 1005 or 1006: no close frame with a status from the client).
                self.continuity.client_left = not self.ws.closed_by_server and message.get("code") in _LOST
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
            await self._rate_limited("audio arrives faster than real time")
        elif pcm:
            frame = AudioFrame(session_id=self.session_id, turn_id=self.turn, seq=self.frame_seq, audio=pcm)
            self.frame_seq += 1
            await self.to_asr(frame)
            self.usage.audio_in(len(pcm))

    async def to_asr(self, message: Message) -> None:
        """Queue a message for the session's audio stream; a queue full (Redis stalled) closes the session."""
        if not self.inbound.put(message) and not self.ws.closed_by_server:
            GATEWAY_CLIENT_ERRORS.labels(reason="overloaded").inc()
            await self.send(error_event("server_busy", "audio cannot be taken in fast enough; reconnect"))
            await self.ws.close(code=1013, reason="overloaded")

    async def _on_text(self, text: str) -> bool:
        """Handle a client event; False when the client asked to close."""
        if not self._text_bucket.take(1):
            await self._rate_limited("text events arrive faster than allowed")
            return True
        try:
            event = parse_client_event(text)
        except ClientEventError as exc:
            await self._reject(exc.code, exc.message)
            return True
        if isinstance(event, Ping):
            await self.send(server_event("pong"))
        elif isinstance(event, ResponseCancel):
            await self.conversation.client_cancel()
        elif isinstance(event, AudioPlayed):
            await self.conversation.audio_played(event.turn_id, event.played_ms)
        elif isinstance(event, SessionUpdate):
            await self._update(event)
        elif isinstance(event, SessionUsageRequest):
            await self._send_usage()
        else:
            await self._send_usage()  # the session ends: its usage is final
            await self.ws.close(code=1000)
            return False
        return True

    async def _update(self, event: SessionUpdate) -> None:
        options = event.session
        if options.output_sample_rate is not None:
            self.conversation.sample_rate = options.output_sample_rate
        if options.instructions is not None:
            self.instructions = options.instructions
        if options.economy is not None:
            # A session at its budget stays in economy mode.
            forced = self.usage.budget_reached and self.settings.budget_action == "economy"
            self.economy = options.economy or forced
        await self.send(server_event("session.updated", session=self._options()))

    def _options(self) -> dict[str, Any]:
        """The session's effective options, as `session.updated` reports them."""
        return {
            "output_sample_rate": self.conversation.sample_rate,
            "instructions": self.instructions,
            "economy": self.economy,
        }

    async def _rate_limited(self, message: str) -> None:
        """Input over its rate is dropped; one notice a second is enough."""
        GATEWAY_CLIENT_ERRORS.labels(reason="rate_limited").inc()
        now = time.monotonic()
        if now - self._last_rate_error > 1.0:
            self._last_rate_error = now
            await self.send(error_event("rate_limited", message))

    async def _reject(self, code: str, message: str) -> None:
        GATEWAY_CLIENT_ERRORS.labels(reason=code).inc()
        await self.send(error_event(code, message))

    # ---- bus → client

    async def _relay_out(self) -> None:
        tail = StreamTail(
            self.bus, keys.session_out(self.session_id), label="session_out",
            last_id=self.continuity.out_position,
        )  # fmt: skip
        try:
            while True:
                for delivery in await tail.read():
                    try:
                        await self._on_bus(delivery.message)
                    except Exception:
                        if self.ws.application_state != WebSocketState.CONNECTED:
                            return
                        log.exception("relay failed", extra={"session_id": self.session_id})
                    self.continuity.out_position = delivery.entry_id
                await self.continuity.check()
                await self._give_up_stalled_reply()
        finally:
            await tail.close()

    async def _give_up_stalled_reply(self) -> None:
        """End a reply whose output stopped coming (a service died and nobody took its work over)."""
        reply = self.conversation.reply
        if reply is None or reply.failed or reply.assembler.complete or reply.speculation is not None:
            return
        if (
            reply.work_id == self.conversation.work
            and time.monotonic() - reply.last_output_at > REPLY_STALL_S
        ):
            log.warning("reply stalled", extra={"session_id": self.session_id})
            await self.fail_reply(reply, "turn_failed", "the reply timed out")

    async def fail_reply(self, reply: ReplyTrack, code: str, message: str) -> None:
        """Tell the client the turn failed and end its audio: nothing more of this reply will play."""
        reply.failed = True
        await self.send(error_event(code, message, turn_id=reply.turn_id))
        if reply.assembler.announced and not reply.assembler.ended:
            reply.assembler.ended = True
            await self.send(server_event("audio.end", turn_id=reply.turn_id))

    async def _on_bus(self, message: Message) -> None:
        if isinstance(message, ServiceError) and message.code == "session_failed":
            # The session's transcription stopped for good: a new session is the way on.
            await self.send(error_event(message.code, message.message))
            await self._send_usage()
            await self.ws.close(code=1011, reason="speech recognition failed")
            return
        if isinstance(message, SpeechStarted | TranscriptPartial) and self.settings.prefill_hints:
            text = message.text if isinstance(message, TranscriptPartial) else ""
            await hint_prefill(self.bus, self.session_id, text, self.instructions, self.economy)
        if isinstance(message, SpeechStarted):
            await self.conversation.speech_started(message.utterance)
            return
        if isinstance(message, SpeechSustained):
            await self.conversation.speech_sustained(message.utterance)
            return
        if isinstance(message, TranscriptPartial):
            await self.conversation.partial(message.utterance, message.text)
            return
        if isinstance(message, TranscriptSpeculative):
            await self.conversation.speculative(
                message.utterance, message.text, message.pause_ms, message.speech_ended_at
            )
            return
        if isinstance(message, SpeechResumed):
            await self.conversation.resumed(message.utterance, message.pause_ms)
            return
        if isinstance(message, TranscriptFinal):
            await self.conversation.transcript(message.utterance, message.text, message.speech_ended_at)
            return
        if isinstance(message, ReplyUsage):
            await self._on_usage(message)
            return
        reply = self.conversation.current_reply(message.turn_id)
        if reply is None or reply.failed:
            return  # a stale turn's late output: in realtime, no answer beats an old one
        reply.last_output_at = time.monotonic()
        if reply.speculation is not None:
            reply.held.append(message)  # not confirmed yet: the client must not see it
            return
        await self._deliver(reply, message)

    async def _on_usage(self, report: ReplyUsage) -> None:
        """A reply's cost: held with a speculation's output, charged once its reply was released (also
        when it arrives after the turn moved on), dropped for a discarded speculation."""
        reply = self.conversation.current_reply(report.turn_id)
        if reply is not None and reply.speculation is not None:
            reply.held.append(report)
            return
        turn = self.conversation.released_turn(report.turn_id)
        if turn is not None:
            await self._charge(turn, report)

    async def _deliver(self, reply: ReplyTrack, message: Message) -> None:
        """Send one piece of the current reply's output to the client."""
        if isinstance(message, ReplyPhrase):
            if message.seq in reply.phrases:
                return  # a retried reply sends its phrases again
            reply.phrases[message.seq] = message.text
            await self.send(
                server_event("reply.text", turn_id=reply.turn_id, seq=message.seq, text=message.text)
            )
        elif isinstance(message, AudioChunk):
            await self._play(reply, reply.assembler.add_chunk(message.phrase_seq, message.seq, message.audio))
        elif isinstance(message, PhraseAudioDone):
            await self._play(reply, reply.assembler.phrase_done(message.phrase_seq, message.chunk_count))
        elif isinstance(message, ReplyDone):
            reply.assembler.reply_done(message.phrase_count)
            await self._play(reply, [])
        elif isinstance(message, ServiceError):
            await self.fail_reply(reply, message.code, message.message)
        elif isinstance(message, ReplyUsage):
            await self._charge(reply.turn_id, message)

    async def _play(self, reply: ReplyTrack, pieces: list[bytes]) -> None:
        assembler = reply.assembler
        if pieces and not assembler.announced:
            assembler.announced = True
            ended_at = self._speech_ended_at.get(reply.work_id, 0.0)
            latency_s = max(0.0, time.time() - ended_at) if ended_at else None
            await self.send(
                server_event(
                    "audio.start",
                    turn_id=reply.turn_id,
                    sample_rate=reply.sample_rate,
                    latency_ms=None if latency_s is None else round(latency_s * 1000),
                )  # fmt: skip
            )
            if latency_s is not None:
                TURN_FIRST_AUDIO_SECONDS.observe(latency_s)
        for pcm in pieces:
            async with self._send_lock:
                await self.ws.send_bytes(pcm)
            reply.sent(len(pcm), time.monotonic())
            self.usage.audio_out(len(pcm), reply.sample_rate, reply.turn_id)
        if assembler.complete and not assembler.ended:
            assembler.ended = True
            await self.send(server_event("audio.end", turn_id=reply.turn_id))
