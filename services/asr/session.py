"""One session's audio, in order: voice activity → utterances → transcripts on the session's output."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.asr.endpointer import (
    SAMPLE_RATE,
    Endpointer,
    EndpointerEvent,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechSustained,
)
from services.asr.engine import EndingsRecognizer, Recognizer, Transcription
from services.asr.partials import LocalAgreement
from services.asr.pending import PendingUtterance
from services.asr.reader import SESSION_IDLE_TIMEOUT_S, AudioReader, Feed, TailFeed
from services.asr.vad_thread import VadThread
from shared import keys
from shared.bus import Bus
from shared.metrics import (
    ASR_ENDPOINT_SECONDS,
    ASR_FINAL_SECONDS,
    ASR_PARTIALS,
    ASR_PARTIALS_PER_UTTERANCE,
    ASR_SPECULATIVE_FINALS,
    ASR_TURN_VERDICTS,
)
from shared.schema import (
    AsrOptions,
    AudioFrame,
    InputBuffer,
    Message,
    ServiceError,
    SessionClosed,
    SpeechStarted,
    TranscriptFinal,
    TranscriptPartial,
    TranscriptSpeculative,
)
from shared.schema import SpeechResumed as SpeechResumedMessage
from shared.schema import SpeechSustained as SpeechSustainedMessage

log = logging.getLogger(__name__)


_CHECKPOINT_EVERY_S = 0.5
MIN_SILENCE_MS = 100
"""A session may not end utterances on less silence than this (`AsrOptions.max_silence_ms`)."""
MAX_HELD_S = 120
"""Push-to-talk: at most this much audio is held for the next commit (the oldest is dropped beyond it)."""
_BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
_HELD_BYTES = MAX_HELD_S * 1000 * _BYTES_PER_MS

TurnJudge = Callable[[Transcription, bytes], Awaitable[bool]]
"""Is the turn complete, given the transcript of the audio up to a pause (with its near misses) and that
audio?"""


class SessionTranscriber:
    """Owns one session's audio stream from a checkpoint until the session closes.

    The checkpoint is the last entry read while no utterance was in progress and every earlier
    utterance was transcribed, so a replica that takes over re-reads only the unfinished utterance.
    """

    def __init__(
        self,
        bus: Bus,
        session_id: str,
        recognizer: Recognizer,
        endpointer: Endpointer,
        *,
        speculate: bool = True,
        partial_interval_ms: int = 0,
        judge: TurnJudge | None = None,
        idle_timeout_s: float = SESSION_IDLE_TIMEOUT_S,
        reader: AudioReader | None = None,
        vad: VadThread | None = None,
    ) -> None:
        self.bus = bus
        self._vad = vad
        """The replica's VAD thread (None: `asyncio.to_thread`)."""
        self._reader = reader
        """The replica's shared audio reader (None: the session reads its stream itself)."""
        self._idle_timeout_s = idle_timeout_s
        self.session_id = session_id
        self.recognizer = recognizer
        self.endpointer = endpointer
        self._out = keys.session_out(session_id)
        self._seq = 0
        self._utterances: asyncio.Queue[PendingUtterance | None] = asyncio.Queue()
        # A transcription started when the speaker fell silent, before the end of the utterance is
        # confirmed: (start_ms, end_ms) of the speech it covers, and its task (owned by run's TaskGroup).
        self._speculation: tuple[tuple[int, int], asyncio.Task[str | None]] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._speculate_enabled = speculate or judge is not None
        self._judge = judge
        self._partial_interval_ms = partial_interval_ms
        self._partial_task: asyncio.Task[None] | None = None
        self._partial_at_ms = 0  # utterance length when the last partial decode started
        self._agreement = LocalAgreement()
        self._partials_sent = 0  # for the utterance in progress
        self._utterance = 0  # id of the utterance in progress: the seq of the frame that confirmed it
        self._pending_utterances = 0
        self._last_checkpoint = 0.0
        self._last_read: bytes | None = None
        self._checkpointed: bytes | None = None
        self._announced = -1  # the previous owner's newest utterance, until this owner's first one
        self._default_silence_ms = endpointer.config.min_silence_ms
        self._held: bytearray | None = None
        self._options: AsrOptions | None = None
        """The session's options (None: the ASR's own settings), saved with each checkpoint."""
        """Push-to-talk (`AsrOptions.turn_detection` false): the audio since the last commit or clear."""

    async def run(self) -> None:
        """Transcribe until SessionClosed; resumes from the checkpoint of a previous owner."""
        start = await self.bus.redis.get(keys.asr_checkpoint(self.session_id)) or b"0-0"
        announced = await self.bus.redis.get(keys.asr_utterance(self.session_id))
        self._announced = int(announced) if announced is not None else -1
        if (saved := await self.bus.redis.get(keys.asr_options(self.session_id))) is not None:
            self._configure(AsrOptions.model_validate_json(saved))  # in force at the checkpoint
        if self._reader is not None:
            feed = await self._reader.open(self.session_id, start, self._idle_timeout_s)
        else:
            feed = TailFeed(self.bus, self.session_id, start, self._idle_timeout_s)
        try:
            async with asyncio.TaskGroup() as group:
                self._tasks = group
                group.create_task(self._transcribe_in_order())
                await self._read_audio(feed)
                await self._utterances.put(None)
        finally:
            await feed.close()

    async def _read_audio(self, feed: Feed) -> None:
        while (deliveries := await feed.read()) is not None:
            audio: list[tuple[bytes, AudioFrame]] = []
            for delivery in deliveries:
                message = delivery.message
                if isinstance(message, AudioFrame):
                    audio.append((delivery.entry_id, message))
                    continue
                await self._hear(audio)  # control messages act at their place in the audio
                audio = []
                if isinstance(message, SessionClosed):
                    return
                if isinstance(message, AsrOptions):
                    await self._apply_options(message, delivery.entry_id)
                elif isinstance(message, InputBuffer):
                    await self._on_buffer(message, delivery.entry_id)
            await self._hear(audio)
            if deliveries:
                self._last_read = deliveries[-1].entry_id
            await self._maybe_checkpoint()
        log.warning("no audio for too long, ending the session", extra={"session_id": self.session_id})
        await self._publish(ServiceError, code="session_failed", message="no audio arrived for too long")

    async def _hear(self, audio: list[tuple[bytes, AudioFrame]]) -> None:
        if not audio:
            return
        if self._held is not None:
            for _, frame in audio:
                self._held += frame.audio
            if len(self._held) > _HELD_BYTES:
                log.warning("push-to-talk audio over its bound", extra={"session_id": self.session_id})
                del self._held[: len(self._held) - _HELD_BYTES]
            return
        # Silero takes ~0.2 ms a window; still, model calls stay off the event loop.
        feed = functools.partial(self._feed, audio)
        events = await (asyncio.to_thread(feed) if self._vad is None else self._vad.run(feed))
        for entry_id, seq, event in events:
            await self._on_event(seq, event, entry_id)
        self._maybe_partial()

    # ---- control messages (services/gateway/openai_realtime: `turn_detection`, input_audio_buffer.*)

    async def _apply_options(self, options: AsrOptions, entry_id: bytes) -> None:
        was_held = self._held
        if not options.turn_detection and was_held is None and (ended := self.endpointer.end_now()):
            await self._on_event(options.seq, ended, entry_id)  # turning detection off ends the utterance
        self._configure(options)
        if options.turn_detection and was_held:
            # Turning detection on: what was held is heard now, as if it had just arrived.
            frame = AudioFrame(session_id=self.session_id, turn_id=0, seq=options.seq, audio=bytes(was_held))
            await self._hear([(entry_id, frame)])

    def _configure(self, options: AsrOptions) -> None:
        self._options = options
        silence = options.max_silence_ms
        self.endpointer.set_min_silence(
            self._default_silence_ms if silence is None else max(MIN_SILENCE_MS, silence)
        )
        if options.turn_detection:
            self._held = None
        elif self._held is None:
            self._held = bytearray()
            self._drop_speculation()

    async def _on_buffer(self, command: InputBuffer, entry_id: bytes) -> None:
        if self._held is not None:
            if command.action == "commit":
                audio, self._held = bytes(self._held), bytearray()
                at_ms = self.endpointer.position_ms
                held = SpeechEnded(audio=audio, start_ms=at_ms, end_ms=at_ms + len(audio) // _BYTES_PER_MS)
                self._pending_utterances += 1
                await self._utterances.put(PendingUtterance(command.seq, held, time.time(), None, entry_id))
            else:
                self._held = bytearray()
            return
        if command.action == "commit":
            if (cut := self.endpointer.end_now()) is not None:
                await self._on_event(command.seq, cut, entry_id)
            return
        pause_ms = self._speculation[0][1] if self._speculation is not None else 0
        if self._drop_speculation():  # a reply started on the dropped words is void
            await self._publish(SpeechResumedMessage, utterance=self._utterance, pause_ms=pause_ms)
        self.endpointer.discard()

    def _feed(self, frames: list[tuple[bytes, AudioFrame]]) -> list[tuple[bytes, int, EndpointerEvent]]:
        """Worker thread: run the endpointer frame by frame, noting the frame each event came from."""
        return [
            (entry_id, frame.seq, event)
            for entry_id, frame in frames
            for event in self.endpointer.feed(frame.audio)
        ]

    async def _on_event(self, frame_seq: int, event: EndpointerEvent, entry_id: bytes) -> None:
        if isinstance(event, SpeechPaused):
            self._drop_speculation()
            if not self._speculate_enabled:
                return
            assert self._tasks is not None
            task = self._tasks.create_task(self._speculate(self._utterance, event))
            self._speculation = ((event.start_ms, event.end_ms), task)
            return
        if isinstance(event, SpeechResumed):
            if self._drop_speculation():
                await self._publish(SpeechResumedMessage, utterance=self._utterance, pause_ms=event.pause_ms)
            return
        if isinstance(event, SpeechEnded):
            ended_at = self._wall_time(event.end_ms)
            ASR_ENDPOINT_SECONDS.observe(time.time() - ended_at)
            ASR_PARTIALS_PER_UTTERANCE.observe(self._partials_sent)
            self._pending_utterances += 1
            await self._utterances.put(
                PendingUtterance(self._utterance, event, ended_at, self._take_speculation(event), entry_id)
            )
            return
        if isinstance(event, SpeechSustained):
            await self._publish(SpeechSustainedMessage, utterance=self._utterance)
        else:
            # An utterance is named by the frame that confirmed it. A new owner re-detecting the speech the
            # previous one announced (its VAD starts afresh at the checkpoint) may confirm it a frame
            # earlier: it keeps the announced name, or the gateway would drop its transcript as stale.
            self._utterance = max(frame_seq, self._announced)
            self._announced = -1
            self._agreement.reset()
            self._partials_sent = 0
            self._partial_at_ms = 0
            await self._publish(
                SpeechStarted, at_ms=event.at_ms, utterance=self._utterance,
                state={keys.asr_utterance(self.session_id): str(self._utterance)},
            )  # fmt: skip

    def _maybe_partial(self) -> None:
        """Start a partial decode when the utterance grew by the interval and the speaker is speaking."""
        if not self._partial_interval_ms or self._partial_task is not None or self._speculation is not None:
            return
        length = self.endpointer.utterance_ms
        if not self.endpointer.speaking_now or length - self._partial_at_ms < self._partial_interval_ms:
            return
        self._partial_at_ms = length
        assert self._tasks is not None
        self._partial_task = self._tasks.create_task(
            self._partial(self._utterance, self.endpointer.utterance_audio())
        )

    async def _partial(self, utterance: int, pcm: bytes) -> None:
        try:
            text = await self.recognizer.transcribe(pcm, partial=True)
        except Exception:
            log.warning("partial transcription failed", extra={"session_id": self.session_id})
            return
        finally:
            self._partial_task = None
        if utterance != self._utterance or not self.endpointer.in_speech:
            return  # that utterance is over: its final is on its way
        if (committed := self._agreement.update(text)) is not None:
            ASR_PARTIALS.inc()
            self._partials_sent += 1
            await self._publish(TranscriptPartial, text=committed, utterance=utterance)

    async def _speculate(self, utterance: int, paused: SpeechPaused) -> str | None:
        """Transcribe a paused utterance, offer the text to the gateway (which may start the reply on it)
        and judge whether the turn is over; None on failure (the final is then transcribed as usual)."""
        try:
            if isinstance(self.recognizer, EndingsRecognizer):
                heard = await self.recognizer.transcribe_endings(paused.audio)
            else:
                heard = Transcription(await self.recognizer.transcribe(paused.audio))
        except Exception:
            log.warning("speculative transcription failed", extra={"session_id": self.session_id})
            return None
        text = heard.text
        if text:
            await self._publish(
                TranscriptSpeculative, text=text, utterance=utterance,
                speech_ended_at=self._wall_time(paused.end_ms), pause_ms=paused.end_ms,
            )  # fmt: skip
        if self._judge is not None:
            try:
                complete = await self._judge(heard, paused.audio)
            except Exception:
                log.warning("turn judgement failed", extra={"session_id": self.session_id})
                complete = False  # the endpointer's longer silence still ends the turn
            ASR_TURN_VERDICTS.labels(verdict="complete" if complete else "incomplete").inc()
            if complete:
                self.endpointer.end_at_pause(paused.end_ms)
        return text

    def _take_speculation(self, ended: SpeechEnded) -> asyncio.Task[str | None] | None:
        """The speculation for exactly this utterance's audio, if one was started."""
        if self._speculation is not None and self._speculation[0] == (ended.start_ms, ended.end_ms):
            task = self._speculation[1]
            self._speculation = None
            ASR_SPECULATIVE_FINALS.labels(outcome="used").inc()
            return task
        self._drop_speculation()
        return None

    def _drop_speculation(self) -> bool:
        """The speaker went on: the speculative text is for audio that is no longer the utterance."""
        if self._speculation is None:
            return False
        self._speculation[1].cancel()  # the decode finishes on its thread; its result is dropped
        self._speculation = None
        ASR_SPECULATIVE_FINALS.labels(outcome="discarded").inc()
        return True

    async def _transcribe_in_order(self) -> None:
        while (item := await self._utterances.get()) is not None:
            utterance_id, utterance, ended_at = item.utterance_id, item.ended, item.ended_at
            try:
                text = None if item.speculation is None else await item.speculation
                if text is None:
                    text = await self.recognizer.transcribe(utterance.audio)
                # Sent even when empty: the gateway learns that this utterance held no words (noise), and
                # can answer words it held back for it. The checkpoint moves past the utterance in the
                # same write (and not before: pending, it holds the checkpoint back), so a new owner
                # neither says it again nor misses it.
                await self._publish(
                    TranscriptFinal, text=text, utterance=utterance_id, speech_ended_at=ended_at,
                    state={keys.asr_checkpoint(self.session_id): item.end_entry},
                )  # fmt: skip
            finally:
                self._pending_utterances -= 1
            ASR_FINAL_SECONDS.observe(time.time() - ended_at)
            await self._maybe_checkpoint(throttle=False)
            log.debug("utterance transcribed", extra={"session_id": self.session_id, "chars": len(text)})

    async def _maybe_checkpoint(self, *, throttle: bool = True) -> None:
        """Record how far the audio is fully handled, when no utterance is open or awaiting its text."""
        if self._last_read is None or self._last_read == self._checkpointed:
            return
        if not self.endpointer.silent or self._pending_utterances or self._held:
            return  # a candidate's first windows are the utterance's start: a new owner must hear them
        now = time.monotonic()
        if throttle and now - self._last_checkpoint < _CHECKPOINT_EVERY_S:
            return
        self._last_checkpoint = now
        self._checkpointed = self._last_read
        async with self.bus.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.asr_checkpoint(self.session_id), self._last_read, ex=3600)
            if self._options is not None:  # in force there: a new owner replays later ones from the stream
                pipe.set(keys.asr_options(self.session_id), self._options.model_dump_json(), ex=3600)
            await pipe.execute()

    def _wall_time(self, stream_ms: int) -> float:
        """Wall-clock time of a position in the session's audio: it is fed in real time, so the audio at
        the endpointer's position is "now"."""
        return time.time() - (self.endpointer.position_ms - stream_ms) / 1000

    async def _publish(
        self, kind: Callable[..., Message], *, state: dict[str, bytes | str] | None = None, **fields: Any
    ) -> None:
        """Send a message of `kind` for this session, tagged with its current turn and the next seq (and
        set `state`, the session's ASR progress, in the same write)."""
        turn = await self._current_turn()
        await self._emit(kind(session_id=self.session_id, turn_id=turn, seq=self._seq, **fields), state)

    async def _current_turn(self) -> int:
        raw = await self.bus.redis.get(keys.turn_counter(self.session_id))
        return int(raw) if raw is not None else 0

    async def _emit(self, message: Message, state: dict[str, bytes | str] | None = None) -> None:
        self._seq += 1
        await self.bus.send_to_session(self._out, message, state=state)
