"""The session's turn logic: which utterance opens which turn, when a reply is cut, what is answered,
and what goes into the history. No I/O here: the session supplies the effects (Redis, socket, bus).

Rules (docs/protocol.md, "Turns and interruptions"):
- every utterance gets its own turn; a transcript never answers for a later utterance;
- while reply audio is playing, an utterance cuts it only once it is sustained (the ASR's barge-in
  minimum) or has words other than backchannels ("mm-hmm"), so a cough does not interrupt;
- words are never silently lost: a transcript overtaken by a newer utterance, and a request whose reply
  the user did not hear at all because they went on talking, are merged into the next turn's request;
- a reply that was partly heard goes into the history cut where playback stopped, marked interrupted;
- the turn number only rises.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from services.gateway.playback import ReplyTrack
from shared.history import HistoryEntry

# Backchannels: said while listening, they hold no request and never cut a playing reply. Whisper spells
# them freely ("Hmm", "Hmmm", "Mm-hmm", "Uh-huh"), so they are matched by shape.
_BACKCHANNEL = re.compile(r"(h*m+(-?h*m+)*|u+h+|u+m+|a+h+|o+h+|h+u+h+|u+h+-h+u+h+|m+h+m+)")


def is_backchannel(text: str) -> bool:
    """Whether a transcript is only listening noises ("Mm-hmm.", "Uh.")."""
    words = [word.strip(".,!?…").lower() for word in text.split()]
    return bool(words) and all(_BACKCHANNEL.fullmatch(word) for word in words)


class Effects(Protocol):
    """What the conversation needs from the outside world."""

    async def open_turn(self) -> int:
        """Raise the session's turn (cancelling all older work everywhere); returns the new number."""
        ...

    async def send(self, event: dict[str, Any]) -> None:
        """Send a JSON event to the client."""
        ...

    async def request_reply(self, turn_id: int, text: str, speech_ended_at: float) -> None:
        """Ask the LLM to answer `text` for `turn_id`."""
        ...

    async def commit(self, entries: list[HistoryEntry]) -> None:
        """Append to the session's history."""
        ...


class Conversation:
    """Turn state of one session; every method is one event, handled under one lock."""

    def __init__(self, effects: Effects, sample_rate: int, clock: Callable[[], float] = time.monotonic):
        self.effects = effects
        self.sample_rate = sample_rate
        """Sample rate for the next reply's audio."""
        self.clock = clock
        self.turn = 0
        self.reply: ReplyTrack | None = None
        self._utterances: dict[int, int | None] = {}  # utterance → its turn; None while held back
        self._newest_utterance = -1
        self._held_text: list[str] = []  # transcripts overtaken by a newer utterance
        self._lock = asyncio.Lock()

    def current_reply(self, turn_id: int) -> ReplyTrack | None:
        """The reply that output of `turn_id` belongs to, or None if that output is stale."""
        reply = self.reply
        if reply is None or reply.turn_id != turn_id or turn_id != self.turn:
            return None
        return reply

    async def speech_started(self, utterance: int) -> None:
        """The ASR confirmed speech."""
        async with self._lock:
            if utterance in self._utterances or utterance < self._newest_utterance:
                return  # a repeat (ASR failover re-reads audio) or a straggler
            self._newest_utterance = utterance
            if self.reply is not None and self.reply.audible(self.clock()):
                self._utterances[utterance] = None  # maybe a cough: cut only when sustained or worded
                return
            await self._open_turn(utterance, by_speech=True)

    async def speech_sustained(self, utterance: int) -> None:
        """The utterance lasted long enough to be a real interruption."""
        async with self._lock:
            if utterance in self._utterances and self._utterances[utterance] is None:
                await self._open_turn(utterance, by_speech=True)

    async def partial(self, utterance: int, text: str) -> None:
        """The settled words of an utterance still being spoken, shown once its turn is open."""
        async with self._lock:
            turn = self._utterances.get(utterance)
            if turn is not None and utterance == self._newest_utterance and text.strip():
                await self.effects.send({"type": "transcript.partial", "turn_id": turn, "text": text.strip()})

    async def transcript(self, utterance: int, text: str, speech_ended_at: float) -> None:
        """The ASR's final text for an utterance (empty when it held no words)."""
        async with self._lock:
            text = text.strip()
            if utterance not in self._utterances and utterance > self._newest_utterance:
                self._newest_utterance = utterance  # its start was never seen (lost, or before a failover)
                self._utterances[utterance] = None
            if utterance not in self._utterances:
                return
            overtaken = utterance < self._newest_utterance
            if self._utterances[utterance] is None:
                if is_backchannel(text):
                    text = ""
                if not text and (overtaken or not self._has_unanswered()):
                    del self._utterances[utterance]  # a sound with no words left the reply alone
                    return
                await self._open_turn(utterance, by_speech=True)  # words ("stop") do interrupt
            if overtaken:
                if text:
                    await self._send_transcript(self._utterances[utterance] or self.turn, text)
                    self._held_text.append(text)
                return
            if text:
                await self._send_transcript(self.turn, text)
            await self._answer(text, speech_ended_at)

    async def client_cancel(self) -> None:
        """The client asked to stop the reply (`response.cancel`)."""
        async with self._lock:
            await self._open_turn(None, by_speech=False)

    async def audio_played(self, turn_id: int, played_ms: float) -> None:
        """The client reports how far it played a reply."""
        async with self._lock:
            reply = self.reply
            if reply is None or reply.turn_id != turn_id:
                return
            reply.report(played_ms)
            if reply.cut_at is not None:
                await self._send_truncation(reply)

    # ---- internals (lock held)

    async def _open_turn(self, utterance: int | None, *, by_speech: bool) -> None:
        now = self.clock()
        audible = self.reply is not None and self.reply.audible(now)
        self.turn = max(self.turn, await self.effects.open_turn())
        if utterance is not None:
            self._utterances[utterance] = self.turn
        reply = self.reply
        if reply is not None and reply.turn_id < self.turn and not reply.finished(now):
            reply.cut(now, by_speech=by_speech)
        if utterance is not None:
            await self.effects.send({"type": "speech.started", "turn_id": self.turn})
        if audible and reply is not None:
            await self.effects.send({"type": "audio.clear", "turn_id": reply.turn_id})

    def _has_unanswered(self) -> bool:
        reply = self.reply
        unheard = (
            reply is not None
            and not reply.settled
            and reply.cut_by_speech
            and reply.played_ms(self.clock()) <= 0
        )
        return unheard or bool(self._held_text)

    async def _answer(self, text: str, speech_ended_at: float) -> None:
        parts: list[str] = []
        entries: list[HistoryEntry] = []
        previous = self.reply
        if previous is not None and not previous.settled:
            previous.settled = True
            heard = previous.heard(self.clock())
            if previous.cut_by_speech and heard.played_ms <= 0:
                parts.append(previous.request_text)  # never heard a word of it: ask it again, merged
            else:
                entries.append(
                    HistoryEntry(role="user", text=previous.request_text, turn_id=previous.turn_id)
                )
                if heard.text or heard.interrupted:
                    entries.append(
                        HistoryEntry(
                            role="assistant",
                            text=heard.text,
                            turn_id=previous.turn_id,
                            interrupted=heard.interrupted,
                        )  # fmt: skip
                    )
            if previous.cut_at is not None:
                await self._send_truncation(previous)
        parts += self._held_text
        self._held_text = []
        if text:
            parts.append(text)
        if entries:
            await self.effects.commit(entries)
        if not parts:
            return
        request = " ".join(parts)
        self.reply = ReplyTrack(self.turn, request, self.sample_rate)
        await self.effects.request_reply(self.turn, request, speech_ended_at)

    async def _send_truncation(self, reply: ReplyTrack) -> None:
        if reply.truncation_sent:
            return
        reply.truncation_sent = True
        heard = reply.heard(self.clock())
        await self.effects.send(
            {"type": "reply.truncated", "turn_id": reply.turn_id, "played_ms": round(heard.played_ms),
             "text": heard.text}
        )  # fmt: skip

    async def _send_transcript(self, turn_id: int, text: str) -> None:
        await self.effects.send({"type": "transcript.final", "turn_id": turn_id, "text": text})
