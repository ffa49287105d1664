"""Audio on a WebRTC peer connection: the browser's microphone track as 16 kHz PCM for the ASR, and the
reply audio as an outgoing track paced in real time.

The outgoing track is where the reply waits to be heard, so the gateway knows what was played (what the
track handed to the encoder) and a barge-in empties it at once, with no client report needed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH, StreamResampler

TRACK_RATE = 48_000
"""What the outgoing track carries (Opus's own rate: the encoder resamples nothing)."""
FRAME_S = 0.020
_FRAME_SAMPLES = int(TRACK_RATE * FRAME_S)
_FRAME_BYTES = _FRAME_SAMPLES * SAMPLE_WIDTH
_SILENCE = bytes(_FRAME_BYTES)
_TIME_BASE = Fraction(1, TRACK_RATE)
# A sender this far behind its schedule (a stalled loop) starts a new schedule rather than rushing.
_MAX_LAG_S = 0.5

TurnPlayed = Callable[[int, float], None]
"""Called with (turn_id, played_ms) when a turn's audio has all been played."""


class MicrophoneAudio:
    """The browser's microphone track, decoded (by aiortc, after its jitter buffer) and resampled to
    16 kHz mono 16-bit PCM, the ASR's input."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=ASR_SAMPLE_RATE)

    async def read(self) -> bytes:
        """The next decoded piece (20 ms, usually); raises `MediaStreamError` once the track ended."""
        frame = await self.track.recv()
        if not isinstance(frame, av.AudioFrame):
            raise MediaStreamError("not an audio track")
        return b"".join(out.to_ndarray().tobytes() for out in self._resampler.resample(frame))


@dataclass
class _TurnAudio:
    turn_id: int
    resampler: StreamResampler
    pending: bytearray = field(default_factory=bytearray)
    played_bytes: int = 0
    ended: bool = False


class ReplyAudioTrack(MediaStreamTrack):
    """The reply audio going back to the browser: 20 ms frames at real time, silence between replies.

    `begin` starts a turn's audio at the rate the session sends it in, `add` queues it, `end` says all of
    it was queued; `clear` drops what was not played yet and says how much of the turn was.
    """

    kind = "audio"

    def __init__(self, on_turn_played: TurnPlayed, max_queued_s: float = 300.0) -> None:
        super().__init__()
        self._on_turn_played = on_turn_played
        self._max_queued_bytes = int(max_queued_s * TRACK_RATE) * SAMPLE_WIDTH
        self._turns: deque[_TurnAudio] = deque()
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0
        self.audio_frames_sent = 0
        """Frames that carried reply audio (not silence)."""

    def begin(self, turn_id: int, sample_rate: int) -> None:
        """Audio of `turn_id` at `sample_rate` follows (an `audio.start`)."""
        self._turns.append(_TurnAudio(turn_id, StreamResampler(sample_rate, TRACK_RATE)))

    def add(self, pcm: bytes) -> bool:
        """Queue reply PCM of the turn begun last; False when dropped (no turn begun, queue full)."""
        if not self._turns or self._turns[-1].ended or self.queued_bytes() > self._max_queued_bytes:
            return False
        turn = self._turns[-1]
        turn.pending += turn.resampler.process(pcm)
        return True

    def end(self, turn_id: int) -> bool:
        """All of `turn_id`'s audio was queued (an `audio.end`); False when the track holds none of it
        (its end will not be reported)."""
        held = False
        for turn in self._turns:
            if turn.turn_id == turn_id and not turn.ended:
                turn.pending += turn.resampler.process(b"", last=True)
                turn.ended = held = True
        return held

    def clear(self, turn_id: int) -> float | None:
        """Drop `turn_id`'s audio not played yet (an `audio.clear`); returns how much of it was played
        (ms), None when the track held nothing of it."""
        played: float | None = None
        for turn in list(self._turns):
            if turn.turn_id == turn_id:
                played = _ms(turn.played_bytes)
                self._turns.remove(turn)
        return played

    def queued_bytes(self) -> int:
        """Reply audio waiting to be played, at the track's rate."""
        return sum(len(turn.pending) for turn in self._turns)

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms frame, when it is due (aiortc's sender calls this in a loop)."""
        if self.readyState != "live":
            raise MediaStreamError
        loop_now = time.monotonic()
        if self._start is None or loop_now - (self._start + self._pts / TRACK_RATE) > _MAX_LAG_S:
            self._start = loop_now - self._pts / TRACK_RATE
        else:
            self._pts += _FRAME_SAMPLES
            wait = self._start + self._pts / TRACK_RATE - loop_now
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="mono", samples=_FRAME_SAMPLES)
        frame.planes[0].update(self._next_pcm())
        frame.pts = self._pts
        frame.sample_rate = TRACK_RATE
        frame.time_base = _TIME_BASE
        self.frames_sent += 1
        return frame

    def _next_pcm(self) -> bytes:
        """One frame of the oldest turn's audio (a turn that ran out of audio waits for more)."""
        while self._turns:
            turn = self._turns[0]
            if turn.pending:
                chunk = bytes(turn.pending[:_FRAME_BYTES])
                del turn.pending[:_FRAME_BYTES]
                turn.played_bytes += len(chunk)
                self.audio_frames_sent += 1
                if not turn.pending and turn.ended:
                    self._finish(turn)
                return chunk + _SILENCE[len(chunk) :]
            if not turn.ended:
                break  # more of it is coming: silence until it does
            self._finish(turn)
        return _SILENCE

    def _finish(self, turn: _TurnAudio) -> None:
        self._turns.popleft()
        self._on_turn_played(turn.turn_id, _ms(turn.played_bytes))


def _ms(track_bytes: int) -> float:
    return track_bytes / (SAMPLE_WIDTH * TRACK_RATE) * 1000.0
