"""Silero endpointing and Whisper transcription on speech synthesized by the bundled piper voice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from services.asr.endpointer import (
    SAMPLE_RATE,
    Endpointer,
    EndpointerEvent,
    SileroDetector,
    SpeechEnded,
    SpeechPaused,
)
from services.asr.engine import FasterWhisperRecognizer
from tests.speech import synthesize_speech

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"
CHUNK_BYTES = 640  # 20 ms, what the gateway forwards


def silence(ms: int) -> bytes:
    return bytes(ms * SAMPLE_RATE // 1000 * 2)


def pcm_ms(pcm: bytes) -> int:
    return len(pcm) * 1000 // (SAMPLE_RATE * 2)


@pytest.fixture(scope="module")
def synthesize() -> Callable[[str], bytes]:
    """Text to 16 kHz mono s16le speech."""
    return lambda text: synthesize_speech(text, SAMPLE_RATE)


@pytest.fixture(scope="module")
def question(synthesize: Callable[[str], bytes]) -> bytes:
    return synthesize(QUESTION)


@pytest.fixture(scope="module")
def recognizer() -> Iterator[FasterWhisperRecognizer]:
    recognizer = FasterWhisperRecognizer.load()
    yield recognizer
    recognizer.close()


def endpoint(pcm: bytes) -> list[EndpointerEvent]:
    endpointer = Endpointer(SileroDetector())
    events: list[EndpointerEvent] = []
    for offset in range(0, len(pcm), CHUNK_BYTES):
        events += endpointer.feed(pcm[offset : offset + CHUNK_BYTES])
    assert not endpointer.in_speech
    return events


def test_silero_finds_one_utterance_around_the_speech(question: bytes) -> None:
    speech_ms = pcm_ms(question)
    events = endpoint(silence(500) + question + silence(1000))

    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "SpeechSustained", "SpeechPaused", "SpeechEnded"]
    paused, ended = events[2], events[3]
    assert isinstance(ended, SpeechEnded) and isinstance(paused, SpeechPaused)
    assert paused.audio == ended.audio, "the speculative transcription gets exactly the final's audio"
    # piper pads its output with a little silence, hence the slack.
    assert 450 <= ended.start_ms <= 750
    assert speech_ms + 200 <= ended.end_ms <= speech_ms + 600
    assert pcm_ms(ended.audio) >= ended.end_ms - ended.start_ms


@pytest.mark.parametrize("level", [0.0, 0.05, 0.15])
def test_silence_and_white_noise_give_no_events(level: float) -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, level * 32768, size=3 * SAMPLE_RATE).clip(-32768, 32767)

    assert endpoint(noise.astype("<i2").tobytes()) == []


async def test_whisper_transcribes_the_question(recognizer: FasterWhisperRecognizer, question: bytes) -> None:
    text = (await recognizer.transcribe(question)).lower()

    assert "capital" in text
    assert "france" in text
    assert text == text.strip()


async def test_whisper_transcribes_what_the_endpointer_cut(
    recognizer: FasterWhisperRecognizer, question: bytes
) -> None:
    events = endpoint(silence(500) + question + silence(1000))
    ended = events[-1]
    assert isinstance(ended, SpeechEnded)

    text = (await recognizer.transcribe(ended.audio)).lower()

    assert "capital" in text
    assert "france" in text


async def test_transcription_leaves_the_event_loop_free(
    recognizer: FasterWhisperRecognizer, question: bytes
) -> None:
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with asyncio.TaskGroup() as group:
        ticker = group.create_task(tick())
        await recognizer.transcribe(question + question)
        ticker.cancel()

    # A decode on the loop would stall it for the whole transcription (a few hundred ms).
    assert len(gaps) >= 5
    assert max(gaps) < 0.15


async def test_empty_and_torn_input(recognizer: FasterWhisperRecognizer) -> None:
    assert await recognizer.transcribe(b"") == ""
    with pytest.raises(ValueError):
        await recognizer.transcribe(b"\0\0\0")
