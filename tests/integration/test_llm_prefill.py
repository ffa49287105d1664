"""Reading the prompt ahead while the user speaks: llama.cpp on the bundled SmolLM2, and the LLM service
hearing the gateway's hints over real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from services.gateway.prefill import hint_prefill
from services.llm.engine import ChatMessage, GenerationOptions, Usage
from services.llm.factory import bundled_model_path
from services.llm.llama import LlamaCppGenerator
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from shared.bus import Bus
from shared.history import HistoryEntry, append_history

pytestmark = pytest.mark.integration

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
HEARD = [SYSTEM, ChatMessage("user", "What color is the sky")]
ASKED = [SYSTEM, ChatMessage("user", "What color is the sky on a clear day?")]


@pytest.fixture
def llama() -> Iterator[LlamaCppGenerator]:
    generator = LlamaCppGenerator(bundled_model_path(), n_threads=1, max_tokens=8)
    yield generator
    generator.close()


def _spy_on_reads(generator: LlamaCppGenerator) -> list[int]:
    """Record how many tokens each llama.cpp evaluation reads (a prompt is read in one call)."""
    reads: list[int] = []
    model = generator._llama
    evaluate = model.eval

    def counting(tokens: Sequence[int]) -> None:
        reads.append(len(tokens))
        evaluate(tokens)

    model.eval = counting  # type: ignore[method-assign]
    return reads


async def _reply(generator: LlamaCppGenerator, messages: list[ChatMessage]) -> str:
    return "".join([delta async for delta in generator.stream(messages)])


async def _forget(generator: LlamaCppGenerator) -> None:
    await asyncio.wrap_future(generator._executor.submit(generator._llama.reset))


async def test_a_prefilled_prompt_is_read_only_past_the_words_heard(llama: LlamaCppGenerator) -> None:
    reads = _spy_on_reads(llama)
    await _forget(llama)
    cold = await _reply(llama, ASKED)
    cold_read = reads[0]

    await _forget(llama)
    reads.clear()
    ahead = await llama.prefill(HEARD)
    assert ahead > 10, "the system prompt and the words heard are read ahead"
    assert await llama.prefill(HEARD) == 0, "what is cached already is not read again"
    reads.clear()
    warm = await _reply(llama, ASKED)

    print("prompt tokens read: cold", cold_read, "after prefill", reads[0], "ahead", ahead)
    assert reads[0] <= cold_read - ahead + 1, (reads[0], cold_read, ahead)
    assert cold.strip() and warm.strip()


async def test_a_reply_stops_a_prefill_at_once(llama: LlamaCppGenerator) -> None:
    await _forget(llama)
    long_words = [SYSTEM, ChatMessage("user", "and then " * 400)]  # ~800 tokens: seconds of reading
    prefill = asyncio.create_task(llama.prefill(long_words))
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await _reply(llama, ASKED)
    assert reply.strip()
    read = await prefill
    assert 0 < read < 700, read
    assert loop.time() - started < 5.0


async def test_no_prefill_while_a_reply_holds_the_model(llama: LlamaCppGenerator) -> None:
    gen = llama.stream([SYSTEM, ChatMessage("user", "Tell me a long story about a dragon.")])
    first = await anext(gen)
    assert first
    assert llama.busy
    assert await llama.prefill(HEARD) == 0
    await gen.aclose()


class _RecordingGenerator:
    """A fake local engine for the service's logic: records the prompts it is asked to read ahead."""

    name = "fake-local"

    def __init__(self) -> None:
        self.prefilled: asyncio.Queue[list[ChatMessage]] = asyncio.Queue()

    async def prefill(self, messages: Sequence[ChatMessage]) -> int:
        await self.prefilled.put(list(messages))
        return 3

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        usage: Usage | None = None,
    ) -> AsyncIterator[str]:
        raise AssertionError("no reply is asked for")

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def service(bus: Bus) -> AsyncIterator[tuple[LlmService, _RecordingGenerator]]:
    generator = _RecordingGenerator()
    settings = LlmSettings(consumer_name="llm-prefill-test")
    svc = LlmService(settings, bus, generator)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.sleep(0.3)  # subscribed
    yield svc, generator
    stop.set()
    await asyncio.wait_for(task, 10)


async def _next(generator: _RecordingGenerator) -> list[ChatMessage]:
    return await asyncio.wait_for(generator.prefilled.get(), 5)


async def test_the_service_reads_ahead_what_the_gateway_hints(
    bus: Bus, service: tuple[LlmService, _RecordingGenerator]
) -> None:
    _, generator = service
    entries = [
        HistoryEntry(role="user", text="Hi", turn_id=1),
        HistoryEntry(role="assistant", text="Hello!", turn_id=1),
    ]
    await append_history(bus.redis, "prefill-s1", entries)

    await hint_prefill(bus, "prefill-s1", "", "Speak like a pirate.", False)
    started = await _next(generator)
    assert started[0].role == "system" and "pirate" in started[0].text
    assert [(m.role, m.text) for m in started[1:]] == [("user", "Hi"), ("assistant", "Hello!"), ("user", "")]

    await hint_prefill(bus, "prefill-s1", "What color is", "Speak like a pirate.", False)
    heard = await _next(generator)
    assert heard[:-1] == started[:-1]
    assert (heard[-1].role, heard[-1].text) == ("user", "What color is")

    await bus.redis.publish("vm:llm:prefill", b"{not json")  # a malformed hint is ignored
    await hint_prefill(bus, "prefill-s1", "What color is the sky", "", True)
    assert (await _next(generator))[-1].text == "What color is the sky"


async def test_without_prefill_the_service_ignores_hints(bus: Bus) -> None:
    generator = _RecordingGenerator()
    settings = LlmSettings(consumer_name="llm-prefill-off", prefill=False)
    svc = LlmService(settings, bus, generator)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.sleep(0.3)
    await hint_prefill(bus, "prefill-s2", "What color is", "", False)
    await asyncio.sleep(0.5)
    assert generator.prefilled.empty()
    stop.set()
    await asyncio.wait_for(task, 10)
