"""Endpointer against a fake detector that scores windows from a scripted timeline."""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from services.asr.endpointer import (
    SAMPLE_RATE,
    Endpointer,
    EndpointerConfig,
    EndpointerEvent,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechSustained,
)

pytestmark = pytest.mark.unit

WINDOW_MS = 20
Span = tuple[int, int, float]


class ScriptedDetector:
    """Scores the window starting at t ms with the probability of the span holding t (else 0)."""

    window_samples = SAMPLE_RATE * WINDOW_MS // 1000

    def __init__(self, *spans: Span) -> None:
        self.spans = spans
        self.windows = 0
        self.resets = 0

    def speech_probability(self, window: npt.NDArray[np.float32]) -> float:
        assert window.dtype == np.float32
        assert window.shape == (self.window_samples,)
        t = self.windows * WINDOW_MS
        self.windows += 1
        return next((p for start, end, p in self.spans if start <= t < end), 0.0)

    def reset(self) -> None:
        self.windows = 0
        self.resets += 1


def stream(ms: int) -> bytes:
    """PCM whose samples count up, so any slice of it can be located."""
    return (np.arange(ms * SAMPLE_RATE // 1000) % 30_000).astype("<i2").tobytes()


def cut(pcm: bytes, start_ms: int, end_ms: int) -> bytes:
    return pcm[start_ms * 32 : end_ms * 32]  # 32 bytes per ms at 16 kHz s16le


def run(
    total_ms: int, *spans: Span, config: EndpointerConfig | None = None, sustained: bool = False
) -> list[EndpointerEvent]:
    events = Endpointer(ScriptedDetector(*spans), config).feed(stream(total_ms))
    return [
        e for e in events if sustained or not isinstance(e, SpeechSustained | SpeechPaused | SpeechResumed)
    ]


def test_speech_is_reported_sustained_once_it_lasts_the_barge_in_minimum() -> None:
    config = EndpointerConfig(barge_in_min_ms=300)
    events = run(3000, (500, 1500, 0.9), (2000, 2200, 0.9), config=config, sustained=True)
    kinds = [type(e).__name__ for e in events if not isinstance(e, SpeechPaused | SpeechResumed)]
    assert kinds == ["SpeechStarted", "SpeechSustained", "SpeechEnded", "SpeechStarted", "SpeechEnded"]
    sustained = events[1]
    assert isinstance(sustained, SpeechSustained) and sustained.at_ms == 800


def test_one_utterance_positions_pre_roll_and_trailing_silence() -> None:
    pcm = stream(3000)
    events = run(3000, (500, 1500, 0.9))

    assert events == [
        SpeechStarted(at_ms=500),
        SpeechEnded(audio=cut(pcm, 300, 1650), start_ms=500, end_ms=1500),
    ]


def test_events_fire_once_min_speech_and_min_silence_have_passed() -> None:
    pcm = stream(3000)
    endpointer = Endpointer(ScriptedDetector((500, 1500, 0.9)))
    fired_at: dict[type, int] = {}
    for t in range(0, 3000, WINDOW_MS):
        for event in endpointer.feed(cut(pcm, t, t + WINDOW_MS)):
            fired_at[type(event)] = t + WINDOW_MS
        assert endpointer.in_speech == (600 <= t + WINDOW_MS < 1900)

    # 96 ms of speech needs 5 windows of 20 ms; 400 ms of silence after the last speech window at 1500.
    # The pause is reported once the post-roll (150 ms) of silence has passed: 1500 + 150, windowed.
    assert fired_at == {SpeechStarted: 600, SpeechSustained: 900, SpeechPaused: 1660, SpeechEnded: 1900}


def test_pre_roll_is_shorter_when_speech_starts_early() -> None:
    pcm = stream(2000)
    events = run(2000, (100, 1000, 0.9))

    assert events[1] == SpeechEnded(audio=cut(pcm, 0, 1150), start_ms=100, end_ms=1000)


@pytest.mark.parametrize("blip", [(500, 540, 0.9), (500, 560, 0.9), (500, 580, 0.9)])
def test_a_short_blip_does_not_start_speech(blip: Span) -> None:
    assert run(2000, blip) == []


def test_dips_between_thresholds_and_short_pauses_do_not_split() -> None:
    pcm = stream(3000)
    spans = [(500, 800, 0.9), (800, 900, 0.4), (900, 1200, 0.9), (1200, 1500, 0.1), (1500, 1800, 0.9)]
    events = run(3000, *spans)

    assert events == [
        SpeechStarted(at_ms=500),
        SpeechEnded(audio=cut(pcm, 300, 1950), start_ms=500, end_ms=1800),
    ]


def test_weak_onset_below_start_threshold_does_not_start() -> None:
    assert run(2000, (500, 1500, 0.4)) == []


def test_max_utterance_forces_an_end_and_speech_goes_on() -> None:
    pcm = stream(6000)
    events = run(6000, (500, 5000, 0.9), config=EndpointerConfig(max_utterance_ms=2000))

    # Audio already delivered is never repeated as the next utterance's pre-roll.
    assert events == [
        SpeechStarted(at_ms=500),
        SpeechEnded(audio=cut(pcm, 300, 2500), start_ms=500, end_ms=2500),
        SpeechStarted(at_ms=2500),
        SpeechEnded(audio=cut(pcm, 2500, 4500), start_ms=2500, end_ms=4500),
        SpeechStarted(at_ms=4500),
        SpeechEnded(audio=cut(pcm, 4500, 5150), start_ms=4500, end_ms=5000),
    ]


def test_odd_sized_chunks_give_the_same_events_as_one_buffer() -> None:
    spans = [(300, 1100, 0.9), (1900, 1940, 0.9), (2500, 4000, 0.8)]
    pcm = stream(5000)
    whole = Endpointer(ScriptedDetector(*spans)).feed(pcm)

    rng = random.Random(7)
    endpointer = Endpointer(ScriptedDetector(*spans))
    pieces: list[EndpointerEvent] = []
    offset = 0
    while offset < len(pcm):
        size = rng.randint(1, 1001)  # odd sizes split samples across chunks
        pieces += endpointer.feed(pcm[offset : offset + size])
        offset += size

    assert len(whole) == 8  # two utterances, each started, sustained, paused and ended
    assert pieces == whole


def test_reset_drops_the_utterance_and_restarts_positions() -> None:
    detector = ScriptedDetector((500, 1500, 0.9))
    endpointer = Endpointer(detector)
    assert endpointer.feed(stream(1000)) == [SpeechStarted(at_ms=500), SpeechSustained(at_ms=900)]
    assert endpointer.in_speech

    endpointer.reset()

    assert not endpointer.in_speech
    assert detector.resets == 2  # once at construction, once now
    assert endpointer.feed(stream(3000))[0] == SpeechStarted(at_ms=500)


def test_a_pause_carries_exactly_the_audio_of_the_end_unless_speech_resumes() -> None:
    config = EndpointerConfig(min_silence_ms=400, post_roll_ms=150)
    # One utterance with a 250 ms gap (shorter than the end silence), then silence.
    events = run(4000, (500, 1200, 0.9), (1450, 2000, 0.9), config=config, sustained=True)
    paused = [e for e in events if isinstance(e, SpeechPaused)]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 1 and len(paused) == 2
    first, second = paused
    assert first.end_ms == 1200 and second.end_ms == ended[0].end_ms == 2000
    assert first.audio != ended[0].audio, "speech resumed after the first pause: it is not the final"
    assert second.audio == ended[0].audio and second.start_ms == ended[0].start_ms


def test_speech_resuming_after_a_pause_is_reported_once_naming_the_pause() -> None:
    config = EndpointerConfig(min_silence_ms=400, post_roll_ms=150)
    events = run(4000, (500, 1200, 0.9), (1450, 2000, 0.9), config=config, sustained=True)
    kinds = [type(e).__name__ for e in events if not isinstance(e, SpeechSustained)]
    assert kinds == ["SpeechStarted", "SpeechPaused", "SpeechResumed", "SpeechPaused", "SpeechEnded"]
    assert SpeechResumed(pause_ms=1200) in events


def feed_until(endpointer: Endpointer, pcm: bytes, kind: type) -> tuple[list[EndpointerEvent], int]:
    """Feed 20 ms at a time until an event of `kind` comes; returns all events and the bytes fed."""
    events: list[EndpointerEvent] = []
    step = 640
    for offset in range(0, len(pcm), step):
        events += endpointer.feed(pcm[offset : offset + step])
        if any(isinstance(e, kind) for e in events):
            return events, offset + step
    raise AssertionError(f"no {kind.__name__}")


def test_ending_at_a_pause_gives_the_paused_audio_at_once() -> None:
    config = EndpointerConfig(min_silence_ms=1200, post_roll_ms=150)
    pcm = stream(4000)
    endpointer = Endpointer(ScriptedDetector((500, 1200, 0.9)), config)
    events, fed = feed_until(endpointer, pcm, SpeechPaused)
    paused = events[-1]
    assert isinstance(paused, SpeechPaused)

    endpointer.end_at_pause(paused.end_ms)
    ended = endpointer.feed(pcm[fed : fed + 640])

    assert ended == [SpeechEnded(audio=paused.audio, start_ms=500, end_ms=1200)]
    assert not endpointer.in_speech


def test_a_request_to_end_at_a_pause_the_speaker_left_is_ignored() -> None:
    config = EndpointerConfig(min_silence_ms=1000, post_roll_ms=150)
    pcm = stream(5000)
    endpointer = Endpointer(ScriptedDetector((500, 1200, 0.9), (1600, 2000, 0.9)), config)
    events, fed = feed_until(endpointer, pcm, SpeechPaused)
    paused = events[-1]
    assert isinstance(paused, SpeechPaused)
    _, more = feed_until(endpointer, pcm[fed:], SpeechResumed)  # the verdict comes too late

    endpointer.end_at_pause(paused.end_ms)
    rest = endpointer.feed(pcm[fed + more :])

    ended = [e for e in rest if isinstance(e, SpeechEnded)]
    assert [(e.start_ms, e.end_ms) for e in ended] == [(500, 2000)], "one utterance, ended by the silence"


def test_speech_ended_repr_leaves_out_the_audio() -> None:
    assert repr(SpeechEnded(audio=b"\0" * 64, start_ms=1, end_ms=2)) == "SpeechEnded(start_ms=1, end_ms=2)"


# ---- what a session's control messages do (services/asr/session.py: AsrOptions, InputBuffer)


def test_a_new_min_silence_applies_from_then_on_to_the_utterance_in_progress() -> None:
    pcm = stream(4000)
    endpointer = Endpointer(ScriptedDetector((500, 1000, 0.9), (1600, 2000, 0.9)))  # a 600 ms pause
    events = [e for e in endpointer.feed(cut(pcm, 0, 800)) if isinstance(e, SpeechEnded)]
    endpointer.set_min_silence(1000)
    events += [e for e in endpointer.feed(cut(pcm, 800, 4000)) if isinstance(e, SpeechEnded)]
    assert [(e.start_ms, e.end_ms) for e in events] == [(500, 2000)], "the pause stayed inside"
    assert endpointer.config.min_silence_ms == 1000


def test_end_now_cuts_the_utterance_with_all_its_audio_and_speech_goes_on_as_a_new_one() -> None:
    pcm = stream(3000)
    endpointer = Endpointer(ScriptedDetector((500, 2000, 0.9)))
    assert endpointer.end_now() is None, "no utterance yet"
    endpointer.feed(cut(pcm, 0, 1200))
    ended = endpointer.end_now()
    assert ended == SpeechEnded(audio=cut(pcm, 300, 1200), start_ms=500, end_ms=1200)
    assert not endpointer.in_speech
    later = endpointer.feed(cut(pcm, 1200, 3000))
    assert [type(e) for e in later if isinstance(e, SpeechStarted | SpeechEnded)] == [
        SpeechStarted,
        SpeechEnded,
    ]
    assert isinstance(later[-1], SpeechEnded) and later[-1].audio.startswith(cut(pcm, 1200, 1300))


def test_discard_drops_the_utterance_and_positions_go_on() -> None:
    pcm = stream(3000)
    endpointer = Endpointer(ScriptedDetector((500, 1000, 0.9), (1800, 2200, 0.9)))
    endpointer.feed(cut(pcm, 0, 1100))
    assert endpointer.in_speech
    endpointer.discard()
    assert not endpointer.in_speech and endpointer.position_ms == 1100
    events = endpointer.feed(cut(pcm, 1100, 3000))
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert [(e.start_ms, e.end_ms) for e in ended] == [(1800, 2200)], "only the speech after the clear"
    assert ended[0].audio == cut(pcm, 1600, 2350)
