"""Smart Turn v3.2 on speech from the bundled piper voice: finished questions close, cut ones stay open."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from services.asr.turn_model import SAMPLE_RATE, WINDOW_SAMPLES, SmartTurnDetector, smart_turn_model_path
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

COMPLETE = [
    "What is the capital of France?",
    "How many days are in a week?",
    "Tell me a story about the moon.",
]
# Piper speaks a bare fragment ("What is the capital of") with a falling, final intonation, and the model
# listens to prosody more than to grammar: those score 0.6-0.9 (cut out of the whole sentence's audio, the
# same words score under 0.15). Fragments that trail off into a filler or a conjunction, or stop where
# piper's voice stays up, sound unfinished as well as read unfinished.
UNFINISHED = [
    "What is the capital of France and",
    "I would like to, um",
    "Can you tell me about the, um",
    "What's the weather like in",
]


@pytest.fixture(scope="module")
def detector() -> Iterator[SmartTurnDetector]:
    detector = SmartTurnDetector.load()
    yield detector
    detector.close()


def speech(text: str) -> bytes:
    return synthesize_speech(text, SAMPLE_RATE)


def test_the_model_ships_in_the_pipecat_wheel() -> None:
    path = smart_turn_model_path()
    assert path.name == "smart-turn-v3.2-cpu.onnx"
    assert path.stat().st_size > 1_000_000


@pytest.mark.parametrize("text", COMPLETE)
def test_a_complete_question_ends_the_turn(detector: SmartTurnDetector, text: str) -> None:
    assert detector.probability(speech(text)) > 0.5


@pytest.mark.parametrize("text", UNFINISHED)
def test_a_sentence_cut_midway_keeps_the_turn_open(detector: SmartTurnDetector, text: str) -> None:
    assert detector.probability(speech(text)) < 0.5


def test_only_the_last_8_seconds_count_and_short_audio_is_padded_in_front(
    detector: SmartTurnDetector,
) -> None:
    question = speech("How many days are in a week?")  # about 1.4 s
    earlier = speech("I would like to, um")
    # 10 s: earlier words that end before the question's last 8 s begin, then silence, then the question.
    ten_seconds = 10 * SAMPLE_RATE * 2
    assert len(earlier) <= ten_seconds - WINDOW_SAMPLES * 2
    long = earlier + bytes(ten_seconds - len(earlier) - len(question)) + question
    assert detector.probability(long) == pytest.approx(detector.probability(question), abs=1e-4)
    # The unfinished words do change the score when they are inside the window: the window is real.
    inside = earlier + silence(500, SAMPLE_RATE) + question
    assert detector.probability(inside) != pytest.approx(detector.probability(question), abs=1e-4)


@pytest.mark.parametrize("pcm", [b"", b"\x01\x02\x03"], ids=["empty", "odd-length"])
async def test_empty_or_odd_input_is_rejected(detector: SmartTurnDetector, pcm: bytes) -> None:
    with pytest.raises(ValueError):
        detector.probability(pcm)
    with pytest.raises(ValueError):
        await detector.end_of_turn_probability(pcm)


async def test_the_async_call_leaves_the_event_loop_free(detector: SmartTurnDetector) -> None:
    pcm = speech("What is the capital of France?")
    other_ran = asyncio.Event()

    async def decide() -> tuple[float, bool]:
        probability = await detector.end_of_turn_probability(pcm)
        return probability, other_ran.is_set()

    async def other() -> None:
        other_ran.set()

    # `decide` starts first: had it run the model on the loop, it would finish before `other` ever ran.
    deciding = asyncio.create_task(decide())
    await asyncio.create_task(other())
    probability, other_ran_meanwhile = await deciding
    assert other_ran_meanwhile
    assert probability == pytest.approx(detector.probability(pcm), abs=1e-6)
