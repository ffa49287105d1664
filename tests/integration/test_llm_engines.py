"""The real generators: llama.cpp on the bundled SmolLM2, and the google-genai SDK against a fake Gemini."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

from services.llm.engine import ChatMessage, GenerationError, GenerationOptions, Generator, Usage
from services.llm.factory import build_generator, bundled_model_path
from services.llm.gemini import GeminiGenerator
from services.llm.llama import LlamaCppGenerator
from services.llm.tools.calculator import calculator_tool
from services.llm.tools.registry import Tool, ToolError, ToolRegistry
from services.llm.tools.runner import ToolRunner
from tests.fake_gemini import FakeGeminiServer

pytestmark = pytest.mark.integration

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
QUESTION = [SYSTEM, ChatMessage("user", "What is the capital of France?")]
LONG_TASK = [SYSTEM, ChatMessage("user", "Write a very long story about a dragon and a knight.")]
KEY = "test-key-123"


async def collect(generator: Generator, messages: list[ChatMessage]) -> list[str]:
    return [delta async for delta in generator.stream(messages)]


@pytest.fixture
def llama() -> Iterator[LlamaCppGenerator]:
    generator = LlamaCppGenerator(bundled_model_path(), n_threads=2, max_tokens=400)
    yield generator
    generator.close()


@pytest.fixture
async def gemini_server() -> AsyncIterator[FakeGeminiServer]:
    async with FakeGeminiServer(api_key=KEY) as server:
        yield server


@pytest.fixture
async def gemini(gemini_server: FakeGeminiServer) -> AsyncIterator[GeminiGenerator]:
    generator = GeminiGenerator(KEY, "gemini-2.5-flash", base_url=gemini_server.base_url)
    yield generator
    await generator.aclose()


async def test_llama_streams_a_reply(llama: LlamaCppGenerator) -> None:
    deltas = await collect(llama, QUESTION)
    assert len(deltas) > 1
    assert any(ch.isalpha() for ch in "".join(deltas))
    assert not llama.busy


async def test_llama_cancel_stops_generation_and_frees_the_model(llama: LlamaCppGenerator) -> None:
    first = asyncio.Event()
    received: list[str] = []

    async def consume() -> None:
        async for delta in llama.stream(LONG_TASK):
            received.append(delta)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=30)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped_after = time.perf_counter() - started
    # The lock is released only once the worker thread has returned, so nothing runs in the background.
    assert not llama.busy
    assert stopped_after < 1.0, f"stop took {stopped_after:.3f} s"
    assert len(received) < 50  # a full story would be hundreds of tokens

    started = time.perf_counter()
    deltas = await collect(llama, QUESTION)
    assert deltas and time.perf_counter() - started < 30


async def test_llama_early_close_frees_the_model(llama: LlamaCppGenerator) -> None:
    async with aclosing(llama.stream(LONG_TASK)) as stream:
        async for _ in stream:
            break
    assert not llama.busy
    assert await collect(llama, QUESTION)


async def test_llama_counts_usage_with_its_tokenizer_also_when_closed_early(llama: LlamaCppGenerator) -> None:
    usage = Usage()
    text = "".join([d async for d in llama.stream(QUESTION, usage=usage)])
    prompt_tokens = sum(len(llama._llama.tokenize(m.text.encode(), add_bos=False)) for m in QUESTION)
    assert usage.reported and usage.model == "SmolLM2-135M-Instruct.Q4_1"
    assert usage.input_tokens > prompt_tokens, "the chat template's tokens count too"
    assert usage.output_tokens == len(llama._llama.tokenize(text.encode(), add_bos=False))
    early = Usage()
    async with aclosing(llama.stream(LONG_TASK, usage=early)) as stream:
        async for _ in stream:
            break
    assert early.reported and 1 <= early.output_tokens < 20, "counted as the consumer left, not later"
    capped = Usage()
    [d async for d in llama.stream(LONG_TASK, options=GenerationOptions(max_tokens=12), usage=capped)]
    assert capped.output_tokens <= 13


async def test_llama_trims_a_history_longer_than_its_context() -> None:
    # A small context keeps the (one token per batch on AMX builds) prompt evaluation short.
    generator = LlamaCppGenerator(bundled_model_path(), n_threads=2, n_ctx=512, max_tokens=32)
    turn = "Tell me one more fact about the long history of Paris and its many monuments. " * 4
    history = [SYSTEM]
    for _ in range(10):  # ~1500 tokens against a 512-token context
        history += [ChatMessage("user", turn), ChatMessage("assistant", turn)]
    try:
        assert await collect(generator, [*history, QUESTION[1]])
    finally:
        generator.close()


async def test_llama_reads_the_prompt_on_its_own_threads_only() -> None:
    # llama-cpp-python reads the prompt on every CPU by default; beside other services that oversubscribes.
    generator = await asyncio.to_thread(build_generator, n_threads=1, max_tokens=8)
    assert isinstance(generator, LlamaCppGenerator)
    try:
        context = generator._llama.context_params
        assert (context.n_threads, context.n_threads_batch) == (1, 1)
    finally:
        generator.close()
    generator = await asyncio.to_thread(build_generator, n_threads=1, n_threads_batch=2, max_tokens=8)
    assert isinstance(generator, LlamaCppGenerator)
    try:
        assert generator._llama.context_params.n_threads_batch == 2
    finally:
        generator.close()


async def test_factory_without_key_builds_the_local_model() -> None:
    generator = await asyncio.to_thread(build_generator, n_threads=2, max_tokens=16)
    assert isinstance(generator, LlamaCppGenerator)
    try:
        assert await collect(generator, QUESTION)
    finally:
        generator.close()


async def test_gemini_streams_the_reply_in_pieces(
    gemini: GeminiGenerator, gemini_server: FakeGeminiServer
) -> None:
    deltas = await collect(gemini, QUESTION)
    assert deltas == gemini_server.chunks()
    assert len(deltas) > 1
    assert "".join(deltas) == gemini_server.reply


async def test_gemini_sends_system_instruction_and_history(
    gemini: GeminiGenerator, gemini_server: FakeGeminiServer
) -> None:
    history = [
        SYSTEM,
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello! How can I help?"),
        ChatMessage("user", "What is the capital of France?"),
    ]
    await collect(gemini, history)
    (request,) = gemini_server.requests
    assert request.model == "gemini-2.5-flash"
    assert request.body["systemInstruction"]["parts"] == [{"text": SYSTEM.text}]
    sent = [(c["role"], c["parts"][0]["text"]) for c in request.body["contents"]]
    assert sent == [("user", "Hi"), ("model", "Hello! How can I help?"), ("user", QUESTION[1].text)]


@pytest.mark.parametrize(
    ("status", "name"), [(429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE")]
)
async def test_gemini_server_error_raises_generation_error(
    gemini: GeminiGenerator, gemini_server: FakeGeminiServer, status: int, name: str
) -> None:
    gemini_server.fail_status = status
    with pytest.raises(GenerationError, match=f"{status} {name}") as caught:
        await collect(gemini, QUESTION)
    assert KEY not in str(caught.value)


async def test_gemini_stream_cut_mid_reply_is_an_error_not_a_hang(
    gemini: GeminiGenerator, gemini_server: FakeGeminiServer
) -> None:
    gemini_server.drop_after = 1
    received: list[str] = []
    async with asyncio.timeout(15):
        with pytest.raises(GenerationError, match="transport error"):
            async for delta in gemini.stream(QUESTION):
                received.append(delta)
    assert received == gemini_server.chunks()[:1]


async def test_gemini_wrong_key_raises_generation_error(gemini_server: FakeGeminiServer) -> None:
    generator = GeminiGenerator("wrong-key", base_url=gemini_server.base_url)
    try:
        with pytest.raises(GenerationError, match="401") as caught:
            await collect(generator, QUESTION)
        assert "wrong-key" not in str(caught.value)
        assert gemini_server.requests == []
    finally:
        await generator.aclose()


async def test_gemini_cancel_propagates(gemini: GeminiGenerator, gemini_server: FakeGeminiServer) -> None:
    gemini_server.delay_s = 0.2
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in gemini.stream(QUESTION):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The HTTP stream is closed at once, not left to run to its end (the server sees the client leave).
    assert await asyncio.to_thread(gemini_server.stream_abandoned.wait, 5.0)
    # The client is still usable for the next turn.
    gemini_server.delay_s = 0.0
    assert "".join(await collect(gemini, QUESTION)) == gemini_server.reply


async def test_factory_with_key_builds_gemini(gemini_server: FakeGeminiServer) -> None:
    generator = build_generator(gemini_api_key=KEY, gemini_base_url=gemini_server.base_url)
    assert isinstance(generator, GeminiGenerator)
    try:
        assert "".join(await collect(generator, QUESTION)) == gemini_server.reply
    finally:
        await generator.aclose()


async def _gemini_with_tools(
    server: FakeGeminiServer, *tools: Tool, filler_after_s: float = 5.0
) -> list[str]:
    runner = ToolRunner(ToolRegistry(tools), filler_after_s=filler_after_s)
    generator = GeminiGenerator(KEY, "gemini-2.5-flash", base_url=server.base_url, tools=runner)
    try:
        return await collect(generator, QUESTION)
    finally:
        await generator.aclose()


async def test_gemini_function_call_round_trips_and_the_answer_uses_its_result(
    gemini_server: FakeGeminiServer,
) -> None:
    gemini_server.tool_call = ("calculate", {"expression": "6 * 7"})
    reply = "".join(await _gemini_with_tools(gemini_server, calculator_tool()))
    assert "42" in reply
    first, second = (r.body for r in gemini_server.requests)
    declared = first["tools"][0]["functionDeclarations"][0]
    schema = declared.get("parametersJsonSchema") or declared["parameters_json_schema"]  # the SDK sends this
    assert declared["name"] == "calculate" and schema["required"] == ["expression"]
    called, answered = second["contents"][-2:]
    assert called["role"] == "model" and called["parts"][0]["functionCall"]["name"] == "calculate"
    assert answered["parts"][0]["functionResponse"]["response"] == {"expression": "6 * 7", "result": 42}


async def test_gemini_tool_failure_and_slowness(gemini_server: FakeGeminiServer) -> None:
    async def slow(args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.6)
        raise ToolError("the service is down")

    gemini_server.tool_call = ("lookup", {})
    deltas = await _gemini_with_tools(
        gemini_server, Tool("lookup", "Look up.", {"type": "object"}, slow), filler_after_s=0.1
    )
    assert deltas[0] == "Let me check. "
    assert "the service is down" in "".join(deltas[1:])
