"""What the client knows about each server turn and each spoken file, and the result per file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from clients.talk.player import Player


@dataclass
class Turn:
    """One server turn: its transcript, its reply (text, audio, playback) and how it ended."""

    utterance: int  # index of the spoken file the turn belongs to
    transcript: str | None = None
    phrases: dict[int, str] = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray)
    sample_rate: int | None = None
    latency_ms: float | None = None  # the server's part of the latency (audio.start)
    first_audio_at: float | None = None
    ended_at: float | None = None  # audio.end arrived
    cleared: bool = False  # audio.clear arrived
    interrupted: bool = False  # playback was cut before the reply had played out
    player: Player | None = None
    played_ms: float | None = None  # reported to the server with audio.played
    truncated_text: str | None = None  # reply.truncated: the words the user heard
    dropped: bool = False  # the connection dropped while the reply came: the server stopped it there

    @property
    def reply_text(self) -> str:
        """The reply's phrases in `seq` order."""
        return " ".join(text for _, text in sorted(self.phrases.items()) if text)

    @property
    def played_out(self) -> bool:
        """The whole reply arrived and was played (or had no audio at all) without interruption."""
        return (
            self.ended_at is not None
            and not self.interrupted
            and not self.cleared
            and (self.player is None or self.played_ms is not None)
        )


@dataclass
class Utterance:
    """One spoken file: its 16 kHz PCM, when it went out, and the turns the server opened for it."""

    pcm: bytes
    first_sent_at: float | None = None
    sent_at: float | None = None  # last frame sent: the end of speech
    turn_ids: list[int] = field(default_factory=list)


@dataclass
class TalkResult:
    """What one spoken file got back, and how fast."""

    transcript: str
    reply_text: str
    first_audio_ms: float | None  # end of the file's speech -> first reply audio byte received
    total_ms: float | None  # first frame of the file sent -> audio.end (None: the reply was cut)
    reply_audio: bytes  # every byte of reply audio received for the answering turn
    sample_rate: int
    heard_text: str | None = None  # reply.truncated's text, the whole reply if it played out, else None
    interrupted: bool = False
    played_ms: float | None = None  # how much of the reply the client played
    turn_id: int | None = None  # the turn whose reply answers this file
    turn_ids: tuple[int, ...] = ()  # every turn the server opened while this file was spoken


@dataclass(frozen=True)
class TraceEntry:
    """One thing that crossed the socket (or a microphone milestone), for tests and diagnosis."""

    at: float  # monotonic clock
    direction: Literal["in", "out"]
    type: str  # event type; "audio" for a binary reply frame; "mic.start"/"mic.end" for a file
    turn_id: int | None  # for audio: the turn it was attributed to, None when dropped as stale
    data: dict[str, object]


def build_result(utterance: Utterance, turns: dict[int, Turn], default_rate: int) -> TalkResult:
    """The result of one spoken file: the reply that counts is the one for its last transcribed turn."""
    own = [turns[turn_id] for turn_id in utterance.turn_ids]
    transcripts = [turn.transcript for turn in own if turn.transcript]
    answered = [turn_id for turn_id in utterance.turn_ids if turns[turn_id].transcript]
    answer_id = answered[-1] if answered else (utterance.turn_ids[-1] if utterance.turn_ids else None)
    if answer_id is None:
        return TalkResult("", "", None, None, b"", default_rate, turn_ids=())
    answer = turns[answer_id]
    first_audio_ms = total_ms = None
    if answer.first_audio_at is not None and utterance.sent_at is not None:
        first_audio_ms = (answer.first_audio_at - utterance.sent_at) * 1000.0
    if answer.ended_at is not None and not answer.cleared and utterance.first_sent_at is not None:
        total_ms = (answer.ended_at - utterance.first_sent_at) * 1000.0
    heard = answer.truncated_text
    if heard is None and answer.played_out:
        heard = answer.reply_text
    return TalkResult(
        transcript=" ".join(transcripts),
        reply_text=answer.reply_text,
        first_audio_ms=first_audio_ms,
        total_ms=total_ms,
        reply_audio=bytes(answer.audio),
        sample_rate=answer.sample_rate or default_rate,
        heard_text=heard,
        interrupted=answer.interrupted or answer.truncated_text is not None or answer.dropped,
        played_ms=answer.played_ms,
        turn_id=answer_id,
        turn_ids=tuple(utterance.turn_ids),
    )
