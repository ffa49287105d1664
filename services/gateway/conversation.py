"""The session's turn logic: which utterance opens which turn, when a reply is cut, what is answered,
and what goes into the history. No I/O here: the session supplies the effects (Redis, socket, bus).

Rules (docs/protocol.md, "Turns and interruptions"):
- every utterance gets its own turn; a transcript never answers for a later utterance;
- while reply audio is playing, an utterance cuts it only once it is sustained (the ASR's barge-in
  minimum) or has words other than backchannels ("mm-hmm"), so a cough does not interrupt;
- words are never silently lost: a transcript overtaken by a newer utterance, and a request whose reply
  the user did not hear at all because they went on talking, are merged into the next turn's request;
- a reply that was partly heard goes into the history cut where playback stopped, marked interrupted;
- the turn number only rises;
- a reply may start on a speculative transcript (the speaker paused; the end of the turn is not yet
  confirmed): its output is held back until the final transcript confirms the text, then released at
  once; if the speaker goes on, or the final differs, its work is cancelled and nothing of it reaches the
  client, the history or the session's usage (only released replies are charged: `released_turn`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from services.gateway.playback import ReplyTrack, Speculation
from shared.history import HistoryEntry
from shared.metrics import SPECULATIVE_REPLIES

# Backchannels: said while listening, they hold no request and never cut a playing reply. Whisper spells
# them freely ("Hmm", "Hmmm", "Mm-hmm", "Uh-huh"), so they are matched by shape.
# Released replies remembered for charging their usage, which comes after the reply ends (even once stale).
_RELEASED_KEPT = 64
_BACKCHANNEL = re.compile(r"(h*m+(-?h*m+)*|u+h+|u+m+|a+h+|o+h+|h+u+h+|u+h+-h+u+h+|m+h+m+)")


def is_backchannel(text: str) -> bool:
    """Whether a transcript is only listening noises ("Mm-hmm.", "Uh.")."""
    words = [word.strip(".,!?…").lower() for word in text.split()]
    return bool(words) and all(_BACKCHANNEL.fullmatch(word) for word in words)


class Effects(Protocol):
    """What the conversation needs from the outside world."""

    async def open_turn(self) -> int:
        """Raise the session's work number (cancelling all older work everywhere); returns the new number."""
        ...

    async def send(self, event: dict[str, Any]) -> None:
        """Send a JSON event to the client."""
        ...

    async def request_reply(self, work_id: int, text: str, speech_ended_at: float) -> None:
        """Ask the LLM to answer `text` under the work number `work_id`."""
        ...

    async def release(self, reply: ReplyTrack) -> None:
        """Send the client the output held back while `reply` was speculative."""
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
        """The client's turn: rises by one for each turn the client sees."""
        self.work = 0
        """The work number on the bus (the session's Redis turn counter); rises for each turn and each
        discarded speculation, so a cancel reaches exactly the work that is void."""
        self.reply: ReplyTrack | None = None
        self._utterances: dict[int, int | None] = {}  # utterance → its turn; None while held back
        self._newest_utterance = -1
        self._held_text: list[str] = []  # transcripts overtaken by a newer utterance
        self._finalized = -1  # newest utterance whose final transcript arrived
        self._resumed: dict[int, int] = {}  # utterance → its last pause the speaker went on after
        self._released: dict[int, int] = {}  # work number → client turn, for replies the client may see
        self._lock = asyncio.Lock()

    def current_reply(self, work_id: int) -> ReplyTrack | None:
        """The reply that output of `work_id` belongs to, or None if that output is stale."""
        reply = self.reply
        if reply is None or reply.work_id != work_id or work_id != self.work:
            return None
        return reply

    def released_turn(self, work_id: int) -> int | None:
        """The client turn of the reply made under `work_id` if its output was released to the client (so
        its cost is the session's), None for a discarded speculation or unknown work."""
        return self._released.get(work_id)

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

    async def speculative(self, utterance: int, text: str, pause_ms: int, speech_ended_at: float) -> None:
        """The text of an utterance whose speaker paused: start its reply now, held back until confirmed."""
        async with self._lock:
            text = text.strip()
            if utterance <= self._finalized or pause_ms <= self._resumed.get(utterance, -1):
                return  # already final, or the speaker went on after this pause
            turn = self._utterances.get(utterance)
            if turn is None or turn != self.turn or utterance != self._newest_utterance:
                return  # not (or no longer) the open turn's utterance: maybe a cough over a reply
            if not text or is_backchannel(text):
                return
            if self.reply is not None and self.reply.speculation is not None:
                await self._discard_speculation()  # an earlier pause's, not voided in time
            carried = await self._settle_previous()
            request = " ".join([*carried, text])
            self.reply = ReplyTrack(
                self.turn, request, self.sample_rate, work_id=self.work,
                speculation=Speculation(utterance, text, carried),
            )  # fmt: skip
            SPECULATIVE_REPLIES.labels(outcome="started").inc()
            await self.effects.request_reply(self.work, request, speech_ended_at)

    async def resumed(self, utterance: int, pause_ms: int) -> None:
        """The speaker went on after a pause: a reply started on that pause's text is void."""
        async with self._lock:
            self._resumed[utterance] = max(pause_ms, self._resumed.get(utterance, -1))
            if self._speculation_of(utterance) is not None:
                await self._discard_speculation()

    async def transcript(self, utterance: int, text: str, speech_ended_at: float) -> None:
        """The ASR's final text for an utterance (empty when it held no words)."""
        async with self._lock:
            text = text.strip()
            self._finalized = max(self._finalized, utterance)
            self._resumed.pop(utterance, None)
            reply, speculation = self.reply, self._speculation_of(utterance)
            if reply is not None and speculation is not None:
                if text == speculation.text and utterance == self._newest_utterance:
                    await self._send_transcript(reply.turn_id, text)
                    reply.speculation = None
                    self._release_work(reply)
                    SPECULATIVE_REPLIES.labels(outcome="used").inc()
                    await self.effects.release(reply)
                    return
                await self._discard_speculation()
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

    async def typed(self, text: str, at: float) -> None:
        """A turn without speech (OpenAI clients' typed text or `response.create`): opens a turn and answers
        it at once, also with no new words (the reply then goes on from the history)."""
        async with self._lock:
            await self._open_turn(None, by_speech=False)
            request = " ".join([*await self._settle_previous(), text.strip()]).strip()
            self.reply = ReplyTrack(self.turn, request, self.sample_rate, work_id=self.work)
            self._release_work(self.reply)
            await self.effects.request_reply(self.work, request, at)

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

    async def park(self) -> None:
        """The client's connection dropped: the reply being made is stopped (its work cancelled) and cut
        where the client's playback was estimated to be, and the exchange goes into the history as far
        as it was heard, with any words still waiting for an answer; a resumed connection starts afresh
        from the history."""
        async with self._lock:
            now = self.clock()
            if self.reply is not None and self.reply.speculation is not None:
                self._void_speculation(self.reply.speculation)
            elif self.reply is not None and not self.reply.finished(now):
                self.reply.cut(now, by_speech=False)
            self.work = max(self.work, await self.effects.open_turn())
            waiting = await self._settle_previous()
            if waiting:
                entry = HistoryEntry(role="user", text=" ".join(waiting), turn_id=self.turn)
                await self.effects.commit([entry])

    # ---- internals (lock held)

    async def _open_turn(self, utterance: int | None, *, by_speech: bool) -> None:
        now = self.clock()
        audible = self.reply is not None and self.reply.audible(now)
        if self.reply is not None and self.reply.speculation is not None:
            self._void_speculation(self.reply.speculation)
        self.work = max(self.work, await self.effects.open_turn())
        self.turn += 1
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

    def _speculation_of(self, utterance: int) -> Speculation | None:
        """The unconfirmed speculation the current reply was started on, if it is for `utterance`."""
        speculation = self.reply.speculation if self.reply is not None else None
        return speculation if speculation is not None and speculation.utterance == utterance else None

    def _void_speculation(self, speculation: Speculation) -> None:
        """Forget a speculative reply: its carried words go back to be answered with the next request."""
        self.reply = None
        self._held_text = speculation.carried + self._held_text
        SPECULATIVE_REPLIES.labels(outcome="discarded").inc()

    async def _discard_speculation(self) -> None:
        """Void the speculative reply and cancel its work (a new work number) without a new client turn."""
        assert self.reply is not None and self.reply.speculation is not None
        self._void_speculation(self.reply.speculation)
        self.work = max(self.work, await self.effects.open_turn())

    async def _answer(self, text: str, speech_ended_at: float) -> None:
        parts = await self._settle_previous()
        if text:
            parts.append(text)
        if not parts:
            return
        request = " ".join(parts)
        self.reply = ReplyTrack(self.turn, request, self.sample_rate, work_id=self.work)
        self._release_work(self.reply)
        await self.effects.request_reply(self.work, request, speech_ended_at)

    def _release_work(self, reply: ReplyTrack) -> None:
        self._released[reply.work_id] = reply.turn_id
        while len(self._released) > _RELEASED_KEPT:
            del self._released[next(iter(self._released))]

    async def _settle_previous(self) -> list[str]:
        """Write the previous exchange to the history (cut to what was heard); returns the words that
        still wait for an answer: a request never heard at all, transcripts held back."""
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
        if entries:
            await self.effects.commit(entries)
        return parts

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
