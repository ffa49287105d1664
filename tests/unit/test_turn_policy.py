"""TurnPolicy: the text rules, and how the text scorer and the audio model are combined (fake models)."""

from __future__ import annotations

import pytest

from services.asr.turn_policy import (
    TurnPolicy,
    TurnPolicyConfig,
    TurnVerdict,
    judge_text,
    normalize_for_scorer,
)

pytestmark = pytest.mark.unit

COMPLETE, INCOMPLETE = TurnVerdict.COMPLETE, TurnVerdict.INCOMPLETE
PCM = b"\x00\x01" * 1600


class FakeDetector:
    """Smart Turn stand-in: a fixed probability, and a record of what it was asked."""

    def __init__(self, probability: float = 0.9, fail: bool = False) -> None:
        self.probability = probability
        self.fail = fail
        self.heard: list[bytes] = []

    async def end_of_turn_probability(self, pcm: bytes) -> float:
        self.heard.append(pcm)
        if self.fail:
            raise RuntimeError("model crashed")
        return self.probability


class FakeScorer:
    """Text scorer stand-in: a probability per text (default for the rest), and a record of the texts."""

    def __init__(
        self, default: float = 0.5, fail: bool = False, by_text: dict[str, float] | None = None
    ) -> None:
        self.default = default
        self.fail = fail
        self.by_text = by_text or {}
        self.read: list[str] = []

    async def end_of_turn_probability(self, text: str) -> float:
        self.read.append(text)
        if self.fail:
            raise RuntimeError("model crashed")
        return self.by_text.get(text, self.default)


# --- text rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "...", "?", " - "])
def test_no_words_is_complete(text: str) -> None:
    assert judge_text(text) is COMPLETE


@pytest.mark.parametrize(
    "text",
    [
        "Can you tell me about the",
        "Tell me a story about a",
        "Send it to my",
        "I need milk and",
        "Is it going to rain or",
        "I'm asking because",
        "Wake me up at seven if",
        "I want to know whether",
        "It's bigger than",
        "So I'm",
        "Yesterday we'd",
        "I was thinking, um",
        "Let me think, uh",
    ],
)
def test_a_word_no_sentence_ends_on_keeps_the_turn_open(text: str) -> None:
    assert judge_text(text) is INCOMPLETE


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of",
        "I would like to",
        "How far is it from",
        "I was wondering if you could",
        "Can you explain how",
        "What's the weather going to be like",
        "The meeting has been moved to",
        "Find me a hotel near",
    ],
)
def test_a_word_a_sentence_seldom_ends_on_keeps_the_turn_open(text: str) -> None:
    assert judge_text(text) is INCOMPLETE


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of?",  # Whisper punctuates fragments as if they were finished
        "Could you remind me to.",
        "Send a message to!",
        "What's a good recipe for?\n",
        "WHAT IS THE CAPITAL OF",
    ],
)
def test_punctuation_and_case_do_not_hide_the_last_word(text: str) -> None:
    assert judge_text(text) is INCOMPLETE


@pytest.mark.parametrize(
    "text",
    [
        "I want to know whether...",
        "Find me a cheap hotel near the…",
        "I need to buy milk,",
        "Remind me to call-",
        "Wake me up at seven — ",
        "The options are:",
    ],
)
def test_speech_that_trails_off_keeps_the_turn_open(text: str) -> None:
    assert judge_text(text) is INCOMPLETE


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Tell me a joke.",
        "Who wrote the book",
        "I need to buy",  # a verb that wants an object: the rules cannot tell, the scorer can
        "Turn the lights off.",
        "Can you turn the heat up?",
        "I think so.",
        "Why?",  # a lone wh-word is a whole turn
        "What?",
        "Is it 7-0?",  # a dash inside the text is not a trailing one
    ],
)
def test_the_rules_leave_other_endings_to_the_models(text: str) -> None:
    assert judge_text(text) is None


def test_a_curly_apostrophe_is_an_apostrophe() -> None:
    assert judge_text("Tomorrow I’m") is INCOMPLETE
    assert normalize_for_scorer("What’s The Capital of?") == "what's the capital of"


def test_the_policy_exposes_the_same_rules() -> None:
    policy = TurnPolicy(FakeDetector())
    assert policy.judge_text("What is the capital of") is INCOMPLETE
    assert policy.judge_text("") is COMPLETE
    assert policy.judge_text("Tell me a joke.") is None


# --- combination -----------------------------------------------------------------------------------------


async def test_no_words_end_the_turn_without_asking_a_model() -> None:
    detector, scorer = FakeDetector(0.0), FakeScorer(0.0)
    policy = TurnPolicy(detector, scorer=scorer)
    assert await policy.judge("", PCM) is COMPLETE
    assert detector.heard == [] and scorer.read == []


async def test_an_open_word_keeps_the_turn_open_whatever_the_models_say() -> None:
    detector, scorer = FakeDetector(1.0), FakeScorer(1.0)
    policy = TurnPolicy(detector, TurnPolicyConfig(require_audio=True), scorer=scorer)
    assert await policy.judge("Tell me about the", PCM) is INCOMPLETE
    assert await policy.judge("I want to know whether...", PCM) is INCOMPLETE
    assert detector.heard == [] and scorer.read == []


async def test_the_scorer_decides_when_the_rules_cannot() -> None:
    scorer = FakeScorer(by_text={"Tell me a joke.": 0.4, "Who wrote the book": 0.02})
    policy = TurnPolicy(FakeDetector(0.0), TurnPolicyConfig(text_threshold=0.12), scorer=scorer)
    finished = await policy.decide("Tell me a joke.", PCM)
    assert finished.verdict is COMPLETE
    assert finished.text_probability == 0.4 and finished.audio_probability is None
    assert await policy.judge("Who wrote the book", PCM) is INCOMPLETE


async def test_the_threshold_counts_as_finished() -> None:
    policy = TurnPolicy(None, TurnPolicyConfig(text_threshold=0.12), scorer=FakeScorer(0.12))
    assert await policy.judge("Tell me a joke", PCM) is COMPLETE


async def test_the_scorer_can_close_a_usually_open_word_with_its_own_threshold() -> None:
    config = TurnPolicyConfig(text_threshold=0.1, usually_open_threshold=0.5)
    scorer = FakeScorer(by_text={"Who is it for?": 0.6, "What are you up to?": 0.3})
    policy = TurnPolicy(None, config, scorer=scorer)
    assert await policy.judge("Who is it for?", PCM) is COMPLETE
    # 0.3 would close a sentence ending on any other word, but not one ending on "to".
    assert await policy.judge("What are you up to?", PCM) is INCOMPLETE
    assert scorer.read == ["Who is it for?", "What are you up to?"]


async def test_without_a_scorer_a_usually_open_word_keeps_the_turn_open() -> None:
    detector = FakeDetector(1.0)
    assert await TurnPolicy(detector).judge("Who is it for?", PCM) is INCOMPLETE
    assert detector.heard == []


async def test_by_default_the_audio_is_not_asked_when_the_scorer_is_there() -> None:
    detector = FakeDetector(0.0)
    policy = TurnPolicy(detector, scorer=FakeScorer(0.9))
    assert await policy.judge("Tell me a joke.", PCM) is COMPLETE
    assert detector.heard == []


@pytest.mark.parametrize(("audio", "verdict"), [(0.8, COMPLETE), (0.2, INCOMPLETE)])
async def test_require_audio_needs_both_to_sound_finished(audio: float, verdict: TurnVerdict) -> None:
    detector = FakeDetector(audio)
    config = TurnPolicyConfig(require_audio=True, audio_threshold=0.5)
    policy = TurnPolicy(detector, config, scorer=FakeScorer(0.9))
    decision = await policy.decide("Tell me a joke.", PCM)
    assert decision.verdict is verdict
    assert decision.text_probability == 0.9 and decision.audio_probability == audio
    assert detector.heard == [PCM]


async def test_require_audio_does_not_ask_the_audio_when_the_text_reads_unfinished() -> None:
    detector = FakeDetector(1.0)
    policy = TurnPolicy(detector, TurnPolicyConfig(require_audio=True), scorer=FakeScorer(0.001))
    assert await policy.judge("I need to buy", PCM) is INCOMPLETE
    assert detector.heard == []


@pytest.mark.parametrize(("audio", "verdict"), [(0.7, COMPLETE), (0.3, INCOMPLETE)])
async def test_without_a_scorer_the_audio_decides(audio: float, verdict: TurnVerdict) -> None:
    detector = FakeDetector(audio)
    policy = TurnPolicy(detector, TurnPolicyConfig(audio_threshold=0.5))
    assert await policy.judge("Who wrote the book", PCM) is verdict
    assert detector.heard == [PCM]


async def test_with_no_model_the_rules_alone_decide() -> None:
    policy = TurnPolicy(None)
    assert await policy.judge("Who wrote the book", PCM) is COMPLETE
    assert await policy.judge("What is the capital of", PCM) is INCOMPLETE
    assert await policy.judge("", b"") is COMPLETE


async def test_a_failing_scorer_falls_back_to_the_audio() -> None:
    policy = TurnPolicy(FakeDetector(0.1), scorer=FakeScorer(fail=True))
    decision = await policy.decide("Tell me a joke.", PCM)
    assert decision.verdict is INCOMPLETE
    assert decision.text_probability is None and decision.audio_probability == 0.1


async def test_a_failing_detector_leaves_the_text_to_decide() -> None:
    config = TurnPolicyConfig(require_audio=True)
    policy = TurnPolicy(FakeDetector(fail=True), config, scorer=FakeScorer(0.9))
    assert await policy.judge("Tell me a joke.", PCM) is COMPLETE
    assert await TurnPolicy(FakeDetector(fail=True)).judge("Tell me a joke.", PCM) is COMPLETE


async def test_no_audio_is_not_sent_to_the_detector() -> None:
    detector = FakeDetector(0.0)
    assert await TurnPolicy(detector).judge("Tell me a joke.", b"") is COMPLETE
    assert detector.heard == []


def test_close_stops_the_scorer_and_tolerates_one_without_close() -> None:
    class ClosingScorer(FakeScorer):
        closed = False

        def close(self) -> None:
            self.closed = True

    scorer = ClosingScorer()
    TurnPolicy(None, scorer=scorer).close()
    assert scorer.closed
    TurnPolicy(None, scorer=FakeScorer()).close()
    TurnPolicy(None).close()


# --- near misses: what the recognizer nearly heard at the end ----------------------------------------------


async def test_near_misses_that_read_unfinished_keep_a_finished_looking_turn_open() -> None:
    policy = TurnPolicy(None, TurnPolicyConfig(misheard_ending=0.15), scorer=FakeScorer(0.9))
    heard = "Can you help me write an email too?"
    endings = (("Can you help me write an email to", 0.1), ("Can you help me write an email,", 0.06))
    decision = await policy.decide(heard, PCM, endings)
    assert decision.verdict is INCOMPLETE
    assert decision.reason == "the end may be misheard"
    assert decision.misheard_probability == pytest.approx(0.16)
    assert decision.text_probability == 0.9


async def test_near_misses_under_the_threshold_or_reading_finished_change_nothing() -> None:
    policy = TurnPolicy(None, TurnPolicyConfig(misheard_ending=0.15), scorer=FakeScorer(0.9))
    heard = "What is the capital of France?"
    assert await policy.judge(heard, PCM, (("What is the capital of", 0.14),)) is COMPLETE
    # A different finished sentence is no reason to wait, however likely.
    assert await policy.judge(heard, PCM, (("What is the capital of friends", 0.6),)) is COMPLETE
    assert await policy.judge(heard, PCM) is COMPLETE


async def test_near_misses_cannot_close_a_turn_or_hold_one_without_words() -> None:
    policy = TurnPolicy(None, scorer=FakeScorer(0.01))
    assert await policy.judge("Who wrote the book", PCM, (("Who wrote the book?", 0.9),)) is INCOMPLETE
    assert await policy.judge("", PCM, (("and", 0.9),)) is COMPLETE


async def test_near_misses_are_ignored_at_a_threshold_of_one() -> None:
    policy = TurnPolicy(None, TurnPolicyConfig(misheard_ending=1.0), scorer=FakeScorer(0.9))
    assert await policy.judge("Set a reminder for mine.", PCM, (("Set a reminder for my", 0.9),)) is COMPLETE
