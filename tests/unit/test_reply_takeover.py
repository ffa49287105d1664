"""A reply taken over part-way: the model is asked to go on after what was said, and a model that starts
over anyway does not say it twice (fake engines; with real processes: tests/integration/test_*_crash.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from services.llm.continuation import continuation_prompt, without_restatement
from services.llm.economy import PhraseStats, ReplyPlan, reply_phrases
from services.llm.engine import ChatMessage, GenerationOptions, Usage

pytestmark = pytest.mark.unit

SAID = ["Paris is the capital of France.", "It sits on the Seine."]
PLAN = ReplyPlan("system", GenerationOptions(), max_sentences=None, economy=False)


class PrefillAware:
    """Answers `reply`; given a prefilled answer (a trailing assistant message), either continues after it,
    as Gemini 2.5 does, or starts over, as chat templates without prefill do."""

    name = "fake"

    def __init__(self, reply: str, *, starts_over: bool, delta_chars: int = 3) -> None:
        self.reply = reply
        self.starts_over = starts_over
        self.delta_chars = delta_chars
        self.prompts: list[list[ChatMessage]] = []

    async def stream(
        self, messages: Sequence[ChatMessage], *, options: object = None, usage: object = None
    ) -> AsyncIterator[str]:
        self.prompts.append(list(messages))
        text = self.reply
        if messages[-1].role == "assistant" and not self.starts_over:
            text = text[len(messages[-1].text) :]
        for start in range(0, len(text), self.delta_chars):  # deltas cut across words
            yield text[start : start + self.delta_chars]

    async def aclose(self) -> None:
        pass


async def _strip(deltas: list[str], said: Sequence[str]) -> str:
    async def source() -> AsyncIterator[str]:
        for delta in deltas:
            yield delta

    return "".join([piece async for piece in without_restatement(source(), said)])


async def test_a_restatement_of_what_was_said_is_dropped_however_it_is_cut() -> None:
    text = "Paris  is the capital of France.\nIt sits on the Seine. It is known for its museums."
    for size in (1, 2, 5, 40, len(text)):
        kept = await _strip([text[i : i + size] for i in range(0, len(text), size)], SAID)
        assert kept.split() == "It is known for its museums.".split(), size


async def test_new_words_are_kept_whole_even_when_they_start_like_what_was_said() -> None:
    assert await _strip([" It is known", " for its museums."], SAID) == " It is known for its museums."
    assert await _strip(["Paris is the capital of Italy? No."], SAID) == "Paris is the capital of Italy? No."
    assert await _strip(["Paris is"], SAID) == "", "a restatement cut short is still a restatement"
    assert await _strip(["Paris is the capital of France. It sits on the Seine."], SAID) == ""


async def test_without_anything_said_the_stream_is_untouched() -> None:
    assert await _strip(["Paris ", "is"], []) == "Paris is"
    prompt = [ChatMessage("user", "Where is Paris?")]
    assert continuation_prompt(prompt, []) == prompt
    assert continuation_prompt(prompt, SAID)[-1] == ChatMessage("assistant", " ".join(SAID))


@pytest.mark.parametrize("starts_over", [False, True])
async def test_a_reply_taken_over_goes_on_after_the_phrases_already_sent(starts_over: bool) -> None:
    reply = "Paris is the capital of France. It sits on the Seine. It is known for its museums. The end."
    generator = PrefillAware(reply, starts_over=starts_over)
    prompt = [ChatMessage("system", "s"), ChatMessage("user", "Tell me about Paris.")]
    stats = PhraseStats(lambda: 0.0)
    phrases = [p async for p in reply_phrases(generator, prompt, PLAN, Usage(), stats, SAID)]
    assert phrases == ["It is known for its museums.", "The end."]
    assert generator.prompts == [[*prompt, ChatMessage("assistant", " ".join(SAID))]]


async def test_a_reply_whose_sentence_cap_was_reached_before_the_takeover_says_nothing_more() -> None:
    generator = PrefillAware("Anything. At all.", starts_over=True)
    plan = ReplyPlan("system", GenerationOptions(), max_sentences=2, economy=True)
    phrases = [p async for p in reply_phrases(generator, [], plan, Usage(), PhraseStats(lambda: 0.0), SAID)]
    assert phrases == [] and generator.prompts == []
