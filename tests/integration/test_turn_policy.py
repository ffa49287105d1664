"""The turn policy on real speech: piper's repeatable voice, Whisper's transcript, SmolLM2 and Smart Turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.asr.engine import FasterWhisperRecognizer
from services.asr.turn_model import SAMPLE_RATE, SmartTurnDetector
from services.asr.turn_policy import SmolLMTurnScorer, TurnPolicy, TurnPolicyConfig, TurnVerdict
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

PAUSED_MS = 150  # SpeechPaused carries the speech and this much silence


@pytest.fixture(scope="module")
def recognizer() -> Iterator[FasterWhisperRecognizer]:
    recognizer = FasterWhisperRecognizer.load(cpu_threads=1)
    yield recognizer
    recognizer.close()


@pytest.fixture(scope="module")
def detector() -> Iterator[SmartTurnDetector]:
    detector = SmartTurnDetector.load()
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def scorer() -> Iterator[SmolLMTurnScorer]:
    scorer = SmolLMTurnScorer()
    yield scorer
    scorer.close()


@pytest.fixture
def policy(detector: SmartTurnDetector, scorer: SmolLMTurnScorer) -> TurnPolicy:
    return TurnPolicy(detector, scorer=scorer)


def at_pause(text: str) -> bytes:
    """The audio SpeechPaused would carry after `text` was spoken."""
    return synthesize_speech(text, SAMPLE_RATE) + silence(PAUSED_MS, SAMPLE_RATE)


async def judged(policy: TurnPolicy, recognizer: FasterWhisperRecognizer, spoken: str) -> TurnVerdict:
    """As the ASR session judges a pause: Whisper's transcript and its near misses at the end."""
    pcm = at_pause(spoken)
    heard = await recognizer.transcribe_endings(pcm)
    return await policy.judge(heard.text, pcm, heard.endings)


@pytest.mark.parametrize(
    "spoken",
    [
        # Whisper writes "of?"; "of" seldom ends a sentence, and SmolLM2 reads it as open (~0.0001).
        "What is the capital of",
        # No word rule: SmolLM2 reads a verb waiting for its object (~0.0002).
        "I need to buy",
        # Whisper writes "Can you tell me about that?", which reads half-finished (~0.03).
        "Can you tell me about the",
    ],
)
async def test_a_head_cut_before_the_pause_keeps_the_turn_open(
    policy: TurnPolicy, recognizer: FasterWhisperRecognizer, spoken: str
) -> None:
    assert await judged(policy, recognizer, spoken) is TurnVerdict.INCOMPLETE


@pytest.mark.parametrize(
    "spoken",
    [
        "What is the capital of France?",
        "How many days are in a week?",
        "Could you remind me to call my mother tonight?",
    ],
)
async def test_a_finished_question_ends_the_turn(
    policy: TurnPolicy, recognizer: FasterWhisperRecognizer, spoken: str
) -> None:
    assert await judged(policy, recognizer, spoken) is TurnVerdict.COMPLETE


async def test_a_head_whisper_writes_as_a_sentence_stays_open_on_what_it_nearly_heard(
    policy: TurnPolicy, recognizer: FasterWhisperRecognizer
) -> None:
    pcm = at_pause("Set a reminder for my")
    heard = await recognizer.transcribe_endings(pcm)
    # Spoken before a pause, "my" takes its strong form: Whisper writes "Set a reminder for mine.", which
    # reads finished, but it gave "my" a fair chance.
    assert not heard.text.lower().rstrip(".?!").endswith(" my")
    assert any(ending.lower().endswith(" my") for ending, _ in heard.endings)
    decision = await policy.decide(heard.text, pcm, heard.endings)
    assert decision.verdict is TurnVerdict.INCOMPLETE
    assert decision.reason == "the end may be misheard"


async def test_the_whole_question_after_a_pause_ends_the_turn(
    policy: TurnPolicy, recognizer: FasterWhisperRecognizer
) -> None:
    head, rest = (
        synthesize_speech("What is the capital of", SAMPLE_RATE),
        synthesize_speech("France?", SAMPLE_RATE),
    )
    pcm = head + silence(600, SAMPLE_RATE) + rest + silence(PAUSED_MS, SAMPLE_RATE)
    text = await recognizer.transcribe(pcm)
    assert "france" in text.lower()
    assert await policy.judge(text, pcm) is TurnVerdict.COMPLETE


async def test_silence_without_words_ends_the_turn(policy: TurnPolicy) -> None:
    assert await policy.judge("", silence(500, SAMPLE_RATE)) is TurnVerdict.COMPLETE


async def test_the_scorer_reads_heads_and_sentences_apart(scorer: SmolLMTurnScorer) -> None:
    config = TurnPolicyConfig()
    # Punctuation and case are stripped before scoring: Whisper punctuates heads as if they were finished.
    assert await scorer.end_of_turn_probability("I need to buy.") < config.text_threshold
    assert await scorer.end_of_turn_probability("I need to buy.") == pytest.approx(
        scorer.probability("i need to buy"), abs=1e-6
    )
    assert await scorer.end_of_turn_probability("What is the capital of France?") > 0.5


async def test_with_audio_required_smart_turn_must_agree(
    detector: SmartTurnDetector, scorer: SmolLMTurnScorer, recognizer: FasterWhisperRecognizer
) -> None:
    policy = TurnPolicy(detector, TurnPolicyConfig(require_audio=True), scorer=scorer)
    pcm = at_pause("How many days are in a week?")
    decision = await policy.decide(await recognizer.transcribe(pcm), pcm)
    assert decision.verdict is TurnVerdict.COMPLETE
    assert decision.audio_probability is not None and decision.audio_probability >= 0.5


async def test_the_loaded_policy_has_the_bundled_scorer(detector: SmartTurnDetector) -> None:
    policy = TurnPolicy.load(detector)
    try:
        assert isinstance(policy.scorer, SmolLMTurnScorer)
        decision = await policy.decide(
            "How many days are in a week?", at_pause("How many days are in a week?")
        )
        assert decision.verdict is TurnVerdict.COMPLETE
        # By default the words decide; the audio model is not consulted.
        assert decision.text_probability is not None and decision.audio_probability is None
    finally:
        policy.close()
