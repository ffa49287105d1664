"""The open microphone: which frame goes out next (a file's speech, or silence), on a real-time clock."""

from __future__ import annotations

import asyncio
import time

from clients.talk.conversation import Conversation
from shared.audio import frames

# Further behind schedule than this means the event loop stalled: bursting the backlog could trip the
# server's 1.5x real-time input limit, so the schedule restarts from now instead.
_MAX_LAG_S = 0.1


class Pacer:
    """Real-time schedule: frame n is due at origin + n * period on the monotonic clock, so no drift."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.origin: float | None = None
        self.count = 0

    async def wait(self) -> None:
        """Sleep until the next frame is due."""
        now = time.monotonic()
        if self.origin is None:
            self.origin = now
        due = self.origin + self.count * self.period_s
        if now - due > _MAX_LAG_S:
            self.origin, due = now - self.count * self.period_s, now
        self.count += 1
        if due > now:
            await asyncio.sleep(due - now)


class Microphone:
    """Speaks the conversation's files one after another, with silence between and after.

    The next file starts once the previous reply has finished playing, or, with `barge_in_ms`, that
    long after the previous reply's first audio arrived: talking over it, as an impatient user does.
    """

    def __init__(self, convo: Conversation, frame_bytes: int, barge_in_ms: float | None = None) -> None:
        if barge_in_ms is not None and barge_in_ms < 0:
            raise ValueError(f"barge_in_ms must not be negative, got {barge_in_ms}")
        self.convo = convo
        self.barge_in_ms = barge_in_ms
        self.silence = bytes(frame_bytes)
        self._files = [list(frames(u.pcm, frame_bytes)) for u in convo.utterances]
        self.index = 0  # the file being spoken, or the last one spoken
        self._cursor = 0  # next frame within it
        self._speaking = True

    @property
    def done(self) -> bool:
        """Every file spoken and the last reply played out."""
        last = len(self._files) - 1
        return not self._speaking and self.index == last and self.convo.reply_done(last)

    def next_frame(self, now: float) -> bytes:
        """The frame to send at `now`: the next piece of a file, or silence."""
        if not self._speaking and self._next_due(now):
            self.index += 1
            self._cursor = 0
            self._speaking = True
        if not self._speaking:
            return self.silence
        frame = self._files[self.index][self._cursor]
        self._cursor += 1
        return frame

    def sent(self, now: float) -> None:
        """The frame from `next_frame` went out at `now`: mark the start and end of each file."""
        if not self._speaking:
            return
        if self._cursor == 1:
            self.convo.mic_started(self.index, now)
        if self._cursor == len(self._files[self.index]):
            self.convo.mic_ended(self.index, now)
            self._speaking = False

    def _next_due(self, now: float) -> bool:
        if self.index + 1 >= len(self._files):
            return False
        if self.convo.reply_done(self.index):
            return True
        if self.barge_in_ms is None:
            return False
        first = self.convo.first_audio_at(self.index)
        return first is not None and now >= first + self.barge_in_ms / 1000.0
