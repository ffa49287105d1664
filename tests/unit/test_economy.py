"""Economy mode and the context budget on a fake engine: the plan, the sentence cap, the dropped turns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from services.llm.economy import (
    PhraseStats,
    ReplyPlan,
    ends_sentence,
    estimate_prompt_tokens,
    estimate_tokens,
    fit_context,
    plan_reply,
    reply_phrases,
)
from services.llm.engine import ChatMessage, GenerationOptions, Usage
from services.llm.settings import LlmSettings

pytestmark = pytest.mark.unit

LONG_REPLY = "Paris is the capital. It is on the Seine. It has many museums. The food is good. "


class ScriptedGenerator:
    """Streams a fixed reply word by word; records the options and whether it was stopped early."""

    name = "scripted:m"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.options: GenerationOptions | None = None
        self.words_sent = 0
        self.closed_early = False

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        usage: Usage | None = None,
    ) -> AsyncIterator[str]:
        self.options = options
        words = self.reply.split(" ")
        try:
            for word in words:
                self.words_sent += 1
                yield word + " "
        except GeneratorExit:
            self.closed_early = True
            raise
        if usage is not None:
            usage.add_tokens(10, len(words))

    async def aclose(self) -> None:
        pass


def settings(**overrides: object) -> LlmSettings:
    return LlmSettings.model_validate(overrides)


def test_economy_plan_caps_tokens_and_sentences_and_says_so(clean_env: pytest.MonkeyPatch) -> None:
    s = settings(max_tokens=160, economy_max_tokens=50, economy_sentences=2, economy_model="mini")
    plan = plan_reply(s, "Speak like a pirate.", economy=True)
    assert plan.options == GenerationOptions(max_tokens=50, model="mini") and plan.max_sentences == 2
    assert plan.system_prompt.startswith(s.system_prompt + " " + s.economy_prompt)
    assert plan.system_prompt.endswith("\n\nSpeak like a pirate.")
    normal = plan_reply(s, "", economy=False)
    assert normal == ReplyPlan(s.system_prompt, GenerationOptions(), None, economy=False)


def test_economy_cap_never_exceeds_the_normal_cap(clean_env: pytest.MonkeyPatch) -> None:
    plan = plan_reply(settings(max_tokens=40, economy_max_tokens=60), "", economy=True)
    assert plan.options.max_tokens == 40 and plan.options.model is None


async def test_the_sentence_cap_stops_the_model() -> None:
    generator = ScriptedGenerator(LONG_REPLY)
    plan = ReplyPlan("system", GenerationOptions(max_tokens=20), max_sentences=2, economy=True)
    stats = PhraseStats(lambda: 1.0)
    phrases = [p async for p in reply_phrases(generator, [], plan, Usage(), stats)]
    assert phrases == ["Paris is the capital.", "It is on the Seine."]
    assert generator.closed_early and generator.words_sent < len(LONG_REPLY.split(" "))
    assert generator.options == plan.options
    assert stats.first_text_at == 1.0 and stats.text.startswith("Paris is the capital. It is on the Seine.")


async def test_without_a_cap_the_whole_reply_is_spoken_and_the_engine_usage_kept() -> None:
    generator = ScriptedGenerator(LONG_REPLY)
    usage = Usage()
    plan = ReplyPlan("system", GenerationOptions(), max_sentences=None, economy=False)
    phrases = [p async for p in reply_phrases(generator, [], plan, usage, PhraseStats(lambda: 0.0))]
    assert len(phrases) == 4 and not generator.closed_early
    assert usage.reported and (usage.input_tokens, usage.output_tokens) == (10, len(LONG_REPLY.split(" ")))


def test_a_first_clause_is_not_a_sentence() -> None:
    assert not ends_sentence("Well, the capital of France,")
    assert ends_sentence("It is Paris.") and ends_sentence('He said "yes!"') and ends_sentence("Why?")


def test_estimates() -> None:
    assert estimate_tokens("") == 0 and estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert estimate_prompt_tokens([ChatMessage("user", "abcd")]) == 1 + 4


def turns(count: int) -> list[ChatMessage]:
    history: list[ChatMessage] = []
    for i in range(count):
        history += [ChatMessage("user", f"question {i} " * 10), ChatMessage("assistant", f"answer {i} " * 10)]
    return history


def test_context_keeps_the_newest_turns_that_fit() -> None:
    system, question = ChatMessage("system", "Be helpful."), ChatMessage("user", "And now?")
    history = turns(10)
    fitted = fit_context(system, history, question, budget_tokens=200)
    assert fitted[0] == system and fitted[-1] == question
    kept = fitted[1:-1]
    assert kept == history[-len(kept) :] and 0 < len(kept) < len(history), "the oldest turns are dropped"
    assert estimate_prompt_tokens(fitted) <= 200
    assert fit_context(system, history, question, budget_tokens=100_000) == [system, *history, question]


def test_context_never_starts_with_an_answer_and_keeps_the_question_whatever_the_budget() -> None:
    system, question = ChatMessage("system", "Be helpful."), ChatMessage("user", "And now?")
    history = [
        ChatMessage("assistant", "x" * 40),
        ChatMessage("user", "y" * 40),
        ChatMessage("assistant", "z"),
    ]
    budget = estimate_prompt_tokens([system, question, *history[1:]])
    fitted = fit_context(system, [ChatMessage("user", "w" * 400), *history], question, budget)
    assert fitted == [system, history[1], history[2], question]
    assert fit_context(system, history, question, budget_tokens=1) == [system, question]
