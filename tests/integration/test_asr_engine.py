"""Silero endpointing and Whisper transcription on speech synthesized by the bundled piper voice."""

from __future__ import annotations

import asyncio
import re
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
from services.asr.engine import MIN_WINDOW_FRAMES, FasterWhisperRecognizer, repeats_itself, window_frames
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


# --- the short encoder window (an utterance under ~28 s is encoded in a window sized to it) ---

SAME_AS_STOCK = [
    "What is the capital of France?",
    "Set a timer for fifteen minutes.",
    "Send a message to Sarah Johnson.",
    "Could you please check whether there are any direct trains from Manchester to Edinburgh on "
    "Thursday morning?",
]
LONG = (
    "Last summer we rented a small house near the coast for two weeks, and every morning we walked along "
    "the beach to a little bakery that sold the best bread in town. In the afternoons we went swimming, "
    "and in the evenings we cooked dinner together on the terrace and talked about everything and nothing "
    "until the stars came out over the water and it was time to go to bed."
)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


@pytest.fixture(scope="module")
def stock_recognizer() -> Iterator[FasterWhisperRecognizer]:
    recognizer = FasterWhisperRecognizer.load(short_window=False)
    yield recognizer
    recognizer.close()


@pytest.mark.parametrize("sentence", SAME_AS_STOCK)
async def test_the_short_window_hears_the_words_of_the_stock_decode(
    recognizer: FasterWhisperRecognizer,
    stock_recognizer: FasterWhisperRecognizer,
    synthesize: Callable[[str], bytes],
    sentence: str,
) -> None:
    pcm = synthesize(sentence)
    fallbacks = recognizer.fallbacks

    short = await recognizer.transcribe(pcm)
    stock = await stock_recognizer.transcribe(pcm)

    assert recognizer.fallbacks == fallbacks, "the short-window decode itself must have given the text"
    assert words(short) == words(stock)
    assert stock_recognizer.fallbacks == 0


async def test_a_long_utterance_is_transcribed_to_its_end(
    recognizer: FasterWhisperRecognizer, synthesize: Callable[[str], bytes]
) -> None:
    pcm = synthesize(LONG)
    seconds = len(pcm) / 2 / SAMPLE_RATE
    assert seconds > MIN_WINDOW_FRAMES / 100 + 1, "must not fit in the minimum window"
    assert window_frames(int(seconds * 100)) is not None, "must not need Whisper's 30 s window"
    fallbacks = recognizer.fallbacks

    heard = words(await recognizer.transcribe(pcm))

    assert recognizer.fallbacks == fallbacks
    assert heard[-5:] == ["time", "to", "go", "to", "bed"]
    said = words(LONG)
    assert abs(len(heard) - len(said)) <= 2
    assert len(set(said) - set(heard)) <= 3


@pytest.mark.parametrize("level", [0.0, 0.003, 0.01, 0.05, 0.15, 0.3])
async def test_silence_and_white_noise_give_no_text(
    recognizer: FasterWhisperRecognizer, level: float
) -> None:
    rng = np.random.default_rng(2)
    for seconds in (0.5, 2.0):
        noise = rng.normal(0.0, level * 32768, size=int(seconds * SAMPLE_RATE)).clip(-32768, 32767)

        assert await recognizer.transcribe(noise.astype("<i2").tobytes()) == ""


def test_the_window_fits_the_utterance() -> None:
    assert window_frames(170) == MIN_WINDOW_FRAMES
    assert window_frames(1834) == 2000  # speech + margin, rounded up to whole seconds
    assert window_frames(2800) == 2900
    assert window_frames(2801) is None  # Whisper's own 30 s window
    assert window_frames(4000) is None


def test_a_looping_decode_is_recognized() -> None:
    assert repeats_itself("What is the capital of France? What is the capital of France? What is the")
    assert repeats_itself("Thank you. Thank you. Thank you.")
    assert not repeats_itself("What is the capital of France?")
    assert not repeats_itself("I think that I can, and I think so.")
