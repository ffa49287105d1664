"""One reply as the user meets it: its phrases, its audio in order, where playback is, and what was heard."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from services.gateway.playout import ReplyAssembler
from shared.audio import SAMPLE_WIDTH

# Reported positions within this much of the end count as the whole reply heard.
_END_TOLERANCE_MS = 60.0
# Speaking rate used to guess the length of a phrase whose audio is still being synthesized.
_MS_PER_WORD = 330.0


@dataclass(frozen=True, slots=True)
class Heard:
    """How much of a reply reached the user's ears."""

    played_ms: float
    text: str
    interrupted: bool


def heard_text(phrases: list[str], phrase_ms: list[float], done: int, played_ms: float) -> tuple[str, bool]:
    """The words played within `played_ms`, and whether the reply was cut short of its end.

    `phrase_ms[i]` is the audio duration of phrase i sent so far; phrases below `done` are complete.
    Whole phrases count up to the one playing; inside it, words are cut in proportion to its time played.
    """
    words: list[str] = []
    start = 0.0
    for index, text in enumerate(phrases):
        duration = phrase_ms[index] if index < len(phrase_ms) else 0.0
        complete = index < done
        if complete and played_ms >= start + duration - _END_TOLERANCE_MS * (index == len(phrases) - 1):
            words += text.split()
            start += duration
            continue
        phrase_words = text.split()
        # A phrase still being synthesized: its length is at least what was sent, likely what its words take.
        length = duration if complete else max(duration, len(phrase_words) * _MS_PER_WORD)
        fraction = 0.0 if length <= 0 else min(1.0, max(0.0, (played_ms - start) / length))
        words += phrase_words[: int(fraction * len(phrase_words))]
        return " ".join(words), True
    return " ".join(words), False


@dataclass(frozen=True, slots=True)
class Speculation:
    """What a speculative reply was started on."""

    utterance: int
    text: str
    carried: list[str]
    """Earlier words merged into its request (held-back transcripts, an unheard request), to be answered
    again if the speculation is discarded."""


@dataclass
class ReplyTrack:
    """The reply of one turn: what the gateway sent and what the client played of it.

    Playback is modelled as the client would do it: audio plays from its arrival, at real time, waiting
    when it runs out; the client's own report (`audio.played`) wins over the model when it comes.
    """

    turn_id: int
    """The turn as the client knows it."""
    request_text: str
    sample_rate: int
    work_id: int = -1
    """The turn number its work runs under on the bus (-1: the same as `turn_id`). A discarded speculative
    reply moves the work on to a new number while the client's turn stays."""
    speculation: Speculation | None = None
    """Set while the reply is made from a speculative transcript that the final has not confirmed: its
    output is held back from the client."""
    held: list[Any] = field(default_factory=list)
    """Output that arrived while the reply was speculative, in order, for release on confirmation."""
    assembler: ReplyAssembler = field(init=False)
    phrases: dict[int, str] = field(default_factory=dict)
    first_sent_at: float | None = None
    ends_at: float = 0.0
    sent_ms: float = 0.0
    reported_ms: float | None = None
    cut_at: float | None = None
    cut_by_speech: bool = False
    settled: bool = False
    """Its exchange has been written to the history (or merged into the next turn)."""
    truncation_sent: bool = False
    failed: bool = False
    """A service gave up on it (or it stalled): the client was told, and nothing more of it plays."""
    last_output_at: float = field(default_factory=time.monotonic)
    """When output of this reply last arrived (monotonic), to notice one that stalled."""

    def __post_init__(self) -> None:
        self.assembler = ReplyAssembler(self.turn_id)
        if self.work_id < 0:
            self.work_id = self.turn_id

    def sent(self, pcm_bytes: int, now: float) -> None:
        """Audio went out to the client at `now` (monotonic seconds)."""
        duration_s = pcm_bytes / (SAMPLE_WIDTH * self.sample_rate)
        if self.first_sent_at is None:
            self.first_sent_at = now
        self.ends_at = max(self.ends_at, now) + duration_s
        self.sent_ms += duration_s * 1000.0

    def audible(self, now: float) -> bool:
        """Whether the client may be playing this reply's audio right now."""
        return self.cut_at is None and self.first_sent_at is not None and now < self.ends_at

    def finished(self, now: float) -> bool:
        """All of it was sent (or it failed) and has had time to play."""
        return (self.assembler.complete or self.failed) and now >= self.ends_at

    def cut(self, now: float, *, by_speech: bool) -> None:
        """A newer turn interrupted this reply at `now`."""
        if self.cut_at is None:
            self.cut_at = now
            self.cut_by_speech = by_speech

    def report(self, played_ms: float) -> None:
        """The client says how far it played."""
        self.reported_ms = min(played_ms, self.sent_ms)

    def played_ms(self, now: float) -> float:
        """The client's report, else the model's position at the cut (or now)."""
        if self.reported_ms is not None:
            return self.reported_ms
        if self.first_sent_at is None:
            return 0.0
        at = now if self.cut_at is None else self.cut_at
        return max(0.0, self.sent_ms - max(0.0, self.ends_at - at) * 1000.0)

    def heard(self, now: float) -> Heard:
        """What the user heard of this reply."""
        played = self.played_ms(now)
        texts = [self.phrases.get(seq, "") for seq in range(self._phrases_known())]
        per_phrase = [b / (SAMPLE_WIDTH * self.sample_rate) * 1000.0 for b in self.assembler.released_bytes]
        text, short = heard_text(texts, per_phrase, self.assembler.phrases_done, played)
        return Heard(played, text, interrupted=short or not self.assembler.complete)

    def _phrases_known(self) -> int:
        count = 0
        while count in self.phrases:
            count += 1
        return count
