"""The user's input buffer on the OpenAI path: turn detection and `input_audio_buffer.commit` / `.clear`.

They reach the ASR as in-band messages on the session's audio stream (`AsrOptions`, `InputBuffer`), in
order with the audio. The ASR's transcripts come back as usual; a turn the session is not to answer by
itself (turn detection off, or `create_response: false`) only commits the user's item, and the next
`response.create` answers it (docs/openai-realtime.md, "Turn detection").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from services.gateway.openai_realtime.client_events import ProtocolError, ResponseCreate
from services.gateway.openai_realtime.items import audio_ms, bound
from shared.schema import (
    AsrOptions,
    BusMessage,
    InputBuffer,
    Message,
    SpeechStarted,
    TranscriptFinal,
    TranscriptSpeculative,
)

if TYPE_CHECKING:
    from services.gateway.openai_realtime.session import OpenAIRealtimeSession

MIN_COMMIT_MS = 100
"""The API's smallest input buffer a client may commit."""


class UserInput:
    """One session's input buffer as the gateway knows it, and what it tells the ASR."""

    def __init__(self, session: OpenAIRealtimeSession) -> None:
        self.session = session
        self.config = session.config
        self._told = self.config.asr_options()
        """What the ASR was last told (its own settings until the client changes turn detection)."""
        self._buffered = 0
        """Push-to-talk: bytes of 24 kHz audio appended since the last commit or clear."""
        self._open_utterance: int | None = None
        """Turn detection on: the utterance the ASR is hearing (the buffer holds speech), if any."""
        self._committing: int | None = None
        """A commit's transcript is on its way: the utterance it ends with (or a later one)."""
        self._deferred: ResponseCreate | None = None
        """A `response.create` sent after a commit, answered once the committed words are known."""
        self._last_final = -1
        """The newest utterance whose transcript came (an ASR replica taking over may send one again)."""
        self._turn_of: dict[int, int] = {}
        """The turn each recent utterance opened: its item is that turn's (the user may speak again before
        the transcript comes)."""

    def appended(self, pcm24_bytes: int) -> None:
        """Microphone audio went to the ASR."""
        self._buffered += pcm24_bytes

    async def configure(self) -> None:
        """After a `session.update`: tell the ASR if turn detection changed (from this point of the audio)."""
        options = self.config.asr_options()
        if options == self._told:
            return
        if not options[0]:
            self._buffered, self._open_utterance = 0, None
        self._told = options
        await self._to_asr(AsrOptions, turn_detection=options[0], max_silence_ms=options[1])

    async def commit(self) -> None:
        """End the user's utterance now: the ASR transcribes it, and its transcript commits the item (and
        is answered when detected turns are). Push-to-talk commits all audio since the last commit or
        clear; with turn detection on, the buffer is the speech the ASR is hearing."""
        if self.config.turn_detection is None:
            held_ms = audio_ms(self._buffered)
            empty = held_ms < MIN_COMMIT_MS
        else:
            held_ms, empty = 0, self._open_utterance is None
        if empty:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {held_ms:.2f}ms of audio.",
            )  # fmt: skip
        push_to_talk = self.config.turn_detection is None
        awaited = self.session.frame_seq if push_to_talk else self._open_utterance
        self._buffered, self._open_utterance, self._committing = 0, None, awaited
        await self._to_asr(InputBuffer, action="commit")

    async def clear(self) -> None:
        """Drop the audio since the last commit (push-to-talk) or the utterance being heard."""
        self._buffered, self._open_utterance = 0, None
        await self._to_asr(InputBuffer, action="clear")

    def defer(self, event: ResponseCreate) -> bool:
        """Hold a `response.create` until a commit's words are known (the API answers what was committed
        before it); False when no commit is on its way."""
        if self._committing is None:
            return False
        self._deferred = event
        return True

    async def relay(self, message: Message, native: Callable[[Message], Awaitable[None]]) -> None:
        """Pass an ASR or reply message on to the native session (`native`), or commit the user's item
        without an answer when the session is not to answer by itself."""
        auto = self.config.auto_response
        if isinstance(message, SpeechStarted):
            self._open_utterance = message.utterance
            await native(message)
            self._turn_of[message.utterance] = self.session.turn
            bound(self._turn_of)
            return
        if isinstance(message, TranscriptSpeculative) and not auto:
            return  # no reply starts before the client asks for one
        if isinstance(message, TranscriptFinal):
            if self._open_utterance is not None and message.utterance >= self._open_utterance:
                self._open_utterance = None
            if not auto:
                if message.utterance > self._last_final:
                    await self._committed(message)
            else:
                await native(message)
            self._last_final = max(self._last_final, message.utterance)
            if self._committing is not None and message.utterance >= self._committing:
                self._committing = None
                event, self._deferred = self._deferred, None
                if event is not None:
                    await self.session.respond_now(event)
            return
        await native(message)

    async def _committed(self, final: TranscriptFinal) -> None:
        text = final.text.strip()
        if not text and self.config.turn_detection is not None:
            return  # a sound with no words: no item, as natively
        if text:
            self.session.unanswered.append(text)
        turn = self._turn_of.pop(final.utterance, self.session.turn)
        await self.session.send({"type": "openai.committed", "turn_id": turn, "text": text})

    async def _to_asr(self, kind: type[BusMessage], **fields: Any) -> None:
        """A control message on the session's audio stream, numbered with its frames (a commit's transcript
        is the utterance of that number)."""
        session = self.session
        message = kind(session_id=session.session_id, turn_id=session.turn, seq=session.frame_seq, **fields)
        session.frame_seq += 1
        await session.to_asr(cast(Message, message))
