"""The client's view of one session: turns, the file each belongs to, playback, and what to report."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from clients.talk.events import (
    AudioStart,
    ErrorEvent,
    ReplyText,
    ReplyTruncated,
    ServerEvent,
    SessionStarted,
    TalkError,
    TranscriptFinal,
    TurnEvent,
    decode,
)
from clients.talk.player import Player
from clients.talk.turns import TalkResult, TraceEntry, Turn, Utterance, build_result

log = logging.getLogger(__name__)


class Conversation:
    """Follows the server's events (docs/protocol.md) for a script of spoken files.

    Turns belong to the file being spoken when the server first names them. Reply audio goes to a
    `Player` that models real-time playback; when playback stops early (audio.clear, or the user
    speaking over it) or plays out, an `audio.played` report waits in `outbox` for the sender.
    """

    def __init__(self, utterances: Sequence[bytes]) -> None:
        if not utterances:
            raise ValueError("a conversation needs at least one utterance")
        self.utterances = [Utterance(pcm) for pcm in utterances]
        self.speaking = 0  # the file being spoken, or the last one spoken
        self.session_id: str | None = None
        self.output_sample_rate = 16000
        self.newest_turn = -1  # a reply from an older turn is stale
        self.audio_turn: int | None = None  # turn that incoming binary frames belong to (audio.start)
        self.playing: int | None = None  # turn whose reply the player is playing
        self.turns: dict[int, Turn] = {}
        self.outbox: deque[dict[str, object]] = deque()
        self.trace: list[TraceEntry] = []
        self.started = asyncio.Event()
        self.resume_key: str | None = None
        self.resume_window_s = 0.0
        self.connections = 0  # session.started events: the first connection, then each resumed one

    # ---- server → client

    def on_text(self, text: str, now: float) -> None:
        """Handle one JSON text frame."""
        data, event = decode(text)
        turn_id = data.get("turn_id")
        kind = str(data.get("type"))
        self.trace.append(TraceEntry(now, "in", kind, turn_id if isinstance(turn_id, int) else None, data))
        if event is not None:
            self.on_event(event, now)

    def on_event(self, event: ServerEvent, now: float) -> None:
        """Update the conversation with a typed server event."""
        match event:
            case SessionStarted():
                if event.resumed:
                    self._resumed(now)
                self.session_id = event.session_id
                self.output_sample_rate = event.output_sample_rate
                self.resume_key, self.resume_window_s = event.resume, event.resume_window_s
                self.connections += 1
                self.started.set()
            case TurnEvent(type="speech.started"):
                self._see(event.turn_id)
                self._advance(event.turn_id, now)
            case TurnEvent(type="audio.clear"):
                self._clear(event.turn_id, now)
            case TurnEvent():
                self._end(event.turn_id, now)
            case TranscriptFinal():
                self._see(event.turn_id).transcript = event.text.strip()
                self._advance(event.turn_id, now)
            case ReplyText():
                self._see(event.turn_id).phrases[event.seq] = event.text.strip()
            case AudioStart():
                self._start_audio(event, now)
            case ReplyTruncated():
                self._see(event.turn_id).truncated_text = event.text.strip()
            case ErrorEvent():
                self._error(event)

    def on_audio(self, pcm: bytes, now: float) -> None:
        """Reply audio: it belongs to the turn of the latest audio.start, unless that turn went stale."""
        self.trace.append(TraceEntry(now, "in", "audio", self.audio_turn, {"bytes": len(pcm)}))
        if self.audio_turn is None:
            return  # audio of a cleared or stale turn still in flight
        turn = self.turns[self.audio_turn]
        if turn.first_audio_at is None:
            turn.first_audio_at = now
        turn.audio += pcm
        if turn.player is None:
            turn.player = Player(turn.sample_rate or self.output_sample_rate, now)
            self.playing = self.audio_turn
        turn.player.feed(pcm, now)

    # ---- the clock and the microphone

    def tick(self, now: float) -> None:
        """Called on every microphone frame: a reply that has played out is reported as played."""
        if self.playing is None:
            return
        turn = self.turns[self.playing]
        if turn.player is not None and turn.player.played_out(now):
            self._report(self.playing, turn.player.stop(now), now)
            self.playing = None

    def playback_ends_at(self) -> float | None:
        """When the reply now playing will have played out, once all of it has arrived."""
        if self.playing is None:
            return None
        player = self.turns[self.playing].player
        return None if player is None else player.finishes_at()

    def mic_started(self, index: int, now: float) -> None:
        """The first frame of file `index` went out."""
        self.speaking = index
        self.utterances[index].first_sent_at = now
        self.trace.append(TraceEntry(now, "out", "mic.start", None, {"utterance": index}))

    def mic_ended(self, index: int, now: float) -> None:
        """The last frame of file `index` went out: the end of its speech."""
        self.utterances[index].sent_at = now
        self.trace.append(TraceEntry(now, "out", "mic.end", None, {"utterance": index}))

    def answer(self, index: int) -> Turn | None:
        """The turn answering file `index`: the newest turn, once the file is out and if it is the file's."""
        utterance = self.utterances[index]
        if utterance.sent_at is None or self.newest_turn not in utterance.turn_ids:
            return None
        return self.turns[self.newest_turn]

    def reply_done(self, index: int) -> bool:
        """File `index` has been answered and the answer has finished playing."""
        turn = self.answer(index)
        return turn is not None and bool(turn.transcript) and turn.played_out

    def first_audio_at(self, index: int) -> float | None:
        """When the first audio of the reply to file `index` arrived."""
        turn = self.answer(index)
        return None if turn is None or not turn.transcript else turn.first_audio_at

    # ---- results

    def results(self) -> list[TalkResult]:
        """One result per file spoken so far."""
        return [
            build_result(utterance, self.turns, self.output_sample_rate)
            for utterance in self.utterances
            if utterance.first_sent_at is not None
        ]

    def progress(self) -> str:
        """Where the conversation got stuck, for a timeout message."""
        if not self.started.is_set():
            return "no session.started"
        index = self.speaking
        where = f"file {index + 1} of {len(self.utterances)}"
        utterance = self.utterances[index]
        heard = [self.turns[t].transcript for t in utterance.turn_ids if self.turns[t].transcript]
        if utterance.sent_at is None:
            return f"{where} still being spoken"
        if not heard:
            return f"{where}: no transcript.final"
        turn = self.turns.get(self.newest_turn)
        missing = "no audio.end" if turn is None or turn.ended_at is None else "reply not played out"
        return f"{where}: heard {' '.join(map(str, heard))!r}, {missing} for turn {self.newest_turn}"

    # ---- internals

    def _see(self, turn_id: int) -> Turn:
        turn = self.turns.get(turn_id)
        if turn is None:
            turn = self.turns[turn_id] = Turn(utterance=self.speaking)
            self.utterances[self.speaking].turn_ids.append(turn_id)
        return turn

    def _advance(self, turn_id: int, now: float) -> None:
        """A newer turn makes every older reply stale: stop taking its audio and stop playing it."""
        self.newest_turn = max(self.newest_turn, turn_id)
        if self.audio_turn is not None and self.audio_turn < turn_id:
            self.audio_turn = None
        if self.playing is not None and self.playing < turn_id:
            self._stop(self.playing, now)

    def _start_audio(self, event: AudioStart, now: float) -> None:
        turn = self._see(event.turn_id)
        if event.turn_id >= self.newest_turn and not turn.cleared:
            self._advance(event.turn_id, now)
            self.audio_turn = event.turn_id
            turn.sample_rate = event.sample_rate
            turn.latency_ms = event.latency_ms

    def _clear(self, turn_id: int, now: float) -> None:
        turn = self.turns.get(turn_id)
        if turn is None:
            return
        turn.cleared = True
        if self.audio_turn == turn_id:
            self.audio_turn = None
        if self.playing == turn_id:
            self._stop(turn_id, now)
        elif turn.played_ms is None:
            # Cleared before any of it played: say so, the server then knows none of it was heard.
            turn.interrupted = True
            self._report(turn_id, 0.0, now)

    def _stop(self, turn_id: int, now: float) -> None:
        """Playback of `turn_id` stops now; a reply cut before its end counts as interrupted."""
        turn = self.turns[turn_id]
        self.playing = None
        if turn.player is None:
            return
        turn.interrupted = not turn.player.played_out(now)
        self._report(turn_id, turn.player.stop(now), now)

    def _end(self, turn_id: int, now: float) -> None:
        turn = self._see(turn_id)
        turn.ended_at = now
        if self.audio_turn == turn_id:
            self.audio_turn = None
        if turn.player is not None:
            turn.player.end(now)

    def _resumed(self, now: float) -> None:
        """The session goes on over a new connection; the server stopped the reply that was coming when the
        old one dropped: what arrived of it is all there is (docs/protocol.md#resuming-a-session)."""
        turn = self.turns.get(self.newest_turn)
        self.audio_turn = None
        if turn is not None and turn.ended_at is None and not turn.cleared:
            turn.dropped = True
            self._end(self.newest_turn, now)

    def _report(self, turn_id: int, played_ms: float, now: float) -> None:
        turn = self.turns[turn_id]
        if turn.played_ms is not None:
            return  # one report per reply
        turn.played_ms = played_ms
        message: dict[str, object] = {
            "type": "audio.played",
            "turn_id": turn_id,
            "played_ms": round(played_ms, 1),
        }
        self.outbox.append(message)
        self.trace.append(TraceEntry(now, "out", "audio.played", turn_id, message))

    def _error(self, event: ErrorEvent) -> None:
        # A failure of a turn the user already talked over changes nothing for this conversation.
        stale = event.turn_id is not None and event.turn_id < self.newest_turn
        if event.code == "turn_failed" and not stale:
            raise TalkError(f"the server could not answer (turn_failed: {event.message})")
        log.warning("server error event %s: %s", event.code, event.message)
