"""The LLM service's usage reports and economy mode on real Redis, against the local OpenAI and Gemini
look-alikes: each reply's usage is the server's own figures; economy mode shortens replies and switches the
model; the prompt stays within the context budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from pydantic import SecretStr

from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from shared import keys
from shared.bus import Bus
from shared.history import HistoryEntry, append_history
from shared.schema import Message, ReplyPhrase, ReplyRequested, ReplyUsage, ServiceError
from tests.eventually import output_until
from tests.fake_gemini import FakeGeminiServer
from tests.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.integration

KEY = "sk-test-usage"
LONG_REPLY = "Paris is the capital of France. It lies on the Seine. It has many museums. Its food is famous."


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_key=KEY, reply=LONG_REPLY) as running:
        yield running


def _openai_settings(bus: Bus, server: FakeOpenAIServer, **extra: object) -> LlmSettings:
    settings = LlmSettings(
        consumer_name="t", redis_url=bus.url, openai_base_url=f"{server.base_url}/v1", openai_model="big",
        openai_api_key=SecretStr(KEY), first_phrase_yield_ms=0, tools=False,
    )  # fmt: skip
    return settings.model_copy(update=extra)


def _ask(session_id: str, turn_id: int, text: str, *, economy: bool = False) -> ReplyRequested:
    return ReplyRequested(
        session_id=session_id, turn_id=turn_id, seq=0, text=text, speech_ended_at=0, economy=economy
    )


async def _conversation(bus: Bus, settings: LlmSettings, requests: Sequence[ReplyRequested]) -> list[Message]:
    """Run the service; send each request once the previous one's usage came; return all the output."""
    service = LlmService(settings, bus)
    await service.load()
    stop = asyncio.Event()
    seen: list[Message] = []
    async with asyncio.TaskGroup() as group:
        group.create_task(service.run(stop))
        try:
            for request in requests:
                await bus.send(keys.LLM_REQUESTS, request)
                out = await output_until(bus, request.session_id, _usage_of(request.turn_id), 20)
                seen += [m for m in out if m.turn_id == request.turn_id]
        finally:
            stop.set()
    return seen


def _usage_of(turn_id: int) -> Callable[[Message], bool]:
    return lambda message: isinstance(message, ReplyUsage) and message.turn_id == turn_id


def _usages(out: list[Message]) -> list[ReplyUsage]:
    return [m for m in out if isinstance(m, ReplyUsage)]


async def test_each_reply_reports_the_servers_own_usage(bus: Bus, server: FakeOpenAIServer) -> None:
    questions = ["What is the capital of France?", "And its river?", "Anything else?"]
    out = await _conversation(
        bus, _openai_settings(bus, server), [_ask("u1", turn, q) for turn, q in enumerate(questions, 1)]
    )
    usages = _usages(out)
    assert len(usages) == len(server.usage_sent) == 3, "one usage report per reply"
    for usage, sent in zip(usages, server.usage_sent, strict=True):
        assert (usage.input_tokens, usage.output_tokens) == (sent["prompt_tokens"], sent["completion_tokens"])
        assert (usage.engine, usage.model, usage.estimated, usage.economy) == ("openai", "big", False, False)
    phrases = [m for m in out if isinstance(m, ReplyPhrase) and m.turn_id == 1]
    assert usages[0].phrase_count == len(phrases) == 4


async def test_economy_caps_the_reply_and_switches_the_model(bus: Bus, server: FakeOpenAIServer) -> None:
    settings = _openai_settings(
        bus, server, economy_model="small", economy_max_tokens=40, economy_sentences=2, max_tokens=160
    )
    out = await _conversation(
        bus, settings, [_ask("u2", 1, "Tell me about Paris."), _ask("u2", 2, "Again?", economy=True)]
    )
    normal, economy = server.requests
    assert (normal["model"], normal["max_tokens"]) == ("big", 160)
    assert (economy["model"], economy["max_tokens"]) == ("small", 40)
    assert settings.economy_prompt in economy["messages"][0]["content"]
    assert settings.economy_prompt not in normal["messages"][0]["content"]
    spoken = {n: [m.text for m in out if isinstance(m, ReplyPhrase) and m.turn_id == n] for n in (1, 2)}
    assert len(spoken[1]) == 4
    assert spoken[2] == ["Paris is the capital of France.", "It lies on the Seine."], "two sentences"
    usage = _usages(out)[-1]
    assert usage.economy and usage.model == "small"
    assert usage.output_tokens < _usages(out)[0].output_tokens


async def test_the_oldest_turns_are_dropped_to_fit_the_context_budget(
    bus: Bus, server: FakeOpenAIServer
) -> None:
    history: list[HistoryEntry] = []
    for turn in range(1, 11):
        question = f"Question number {turn}: " + "tell me more. " * 20
        answer = f"Answer number {turn}: " + "there is more. " * 20
        history += [
            HistoryEntry(role="user", text=question, turn_id=turn),
            HistoryEntry(role="assistant", text=answer, turn_id=turn),
        ]
    await append_history(bus.redis, "u3", history)
    await _conversation(bus, _openai_settings(bus, server, context_tokens=400), [_ask("u3", 11, "Last one?")])
    sent = [m["content"] for m in server.requests[-1]["messages"]]
    assert sent[-1] == "Last one?" and sent[-3].startswith("Question number 10:"), "the newest turns stay"
    assert not any("number 1:" in text for text in sent), "the oldest turns are gone"
    assert sum(len(text) for text in sent) // 4 <= 400


async def test_gemini_usage_comes_from_its_usage_metadata_and_economy_switches_its_model(bus: Bus) -> None:
    with FakeGeminiServer(reply=LONG_REPLY) as gemini:
        settings = LlmSettings(
            consumer_name="t", redis_url=bus.url, gemini_api_key=SecretStr(gemini.api_key),
            gemini_base_url=gemini.base_url, first_phrase_yield_ms=0, tools=False,
            economy_model="gemini-lite",
        )  # fmt: skip
        out = await _conversation(bus, settings, [_ask("u4", 1, "Hi?"), _ask("u4", 2, "Hi?", economy=True)])
        models = [request.model for request in gemini.requests]
    full, short = _usages(out)
    assert not [m for m in out if isinstance(m, ServiceError)]
    assert (full.engine, full.model, full.estimated) == ("gemini", "gemini-2.5-flash", False)
    assert (full.input_tokens, full.output_tokens) == (8, len(LONG_REPLY.split()))
    assert models == ["gemini-2.5-flash", "gemini-lite"] and short.model == "gemini-lite" and short.economy
