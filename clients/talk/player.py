"""A model of a loudspeaker playing one reply at 1x from a buffer, as a real client would."""

from __future__ import annotations

from shared.audio import SAMPLE_WIDTH


class Player:
    """Where playback of one reply is, on the monotonic clock, without playing any sound.

    Reply audio arrives faster than real time; playback starts with the first frame and runs at 1x.
    When the buffer runs dry (an underrun) the playhead waits for more audio and goes on from there.
    """

    def __init__(self, sample_rate: int, started_at: float) -> None:
        self.sample_rate = sample_rate
        self.started_at = started_at
        self.received_ms = 0.0  # audio delivered to the buffer so far
        self.underruns = 0  # times the buffer ran dry while more audio was still to come
        self.ended = False  # the whole reply is in the buffer (audio.end)
        self.stopped_at: float | None = None  # cut off (audio.clear) or played out
        self._position_ms = 0.0  # playhead at `_updated_at`
        self._updated_at = started_at

    def feed(self, pcm: bytes, now: float) -> None:
        """Buffer reply audio that arrived at `now`."""
        if self.stopped_at is not None:
            return
        self._advance(now)
        self.received_ms += len(pcm) / (SAMPLE_WIDTH * self.sample_rate) * 1000.0

    def end(self, now: float) -> None:
        """No more audio will come for this reply: playback ends when the buffer is played out."""
        self._advance(now)
        self.ended = True

    def position_ms(self, now: float) -> float:
        """Milliseconds of the reply played by `now`."""
        if self.stopped_at is not None:
            return self._position_ms
        elapsed_ms = max(0.0, now - self._updated_at) * 1000.0
        return min(self.received_ms, self._position_ms + elapsed_ms)

    def finishes_at(self) -> float | None:
        """When the last buffered sample will have played, once the reply has ended; else None."""
        if not self.ended:
            return None
        return self._updated_at + (self.received_ms - self._position_ms) / 1000.0

    def played_out(self, now: float) -> bool:
        """The reply ended and every sample of it has been played by `now`."""
        finish = self.finishes_at()
        return finish is not None and now >= finish

    def stop(self, now: float) -> float:
        """Stop playback at `now` (or where it already stopped); returns the position reached in ms."""
        if self.stopped_at is None:
            self._advance(now)
            self.stopped_at = now
        return self._position_ms

    def _advance(self, now: float) -> None:
        if self.stopped_at is not None or now <= self._updated_at:
            return
        unclamped = self._position_ms + (now - self._updated_at) * 1000.0
        if unclamped > self.received_ms and not self.ended:
            self.underruns += 1
        self._position_ms = min(self.received_ms, unclamped)
        self._updated_at = now
