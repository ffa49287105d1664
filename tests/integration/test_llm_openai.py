"""The OpenAI-compatible engine: httpx + SSE against a local look-alike (chunks, usage, errors, a dropped
stream) and, end to end and offline, against llama.cpp's own server (`python -m llama_cpp.server`) serving
the bundled model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.llm.engine import ChatMessage, GenerationError, GenerationOptions, Usage
from services.llm.factory import bundled_model_path
from services.llm.openai_compat import OpenAICompatibleGenerator
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from services.llm.tools.calculator import calculator_tool
from services.llm.tools.registry import Tool, ToolRegistry
from services.llm.tools.runner import ToolRunner
from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import Message, ReplyDone, ReplyPhrase, ReplyRequested
from tests.fake_openai import FakeOpenAIServer
from tests.ports import free_port_run

pytestmark = pytest.mark.integration

KEY = "sk-test-123"
QUESTION = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Capital of France?")]


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_key=KEY) as running:
        yield running


@pytest.fixture
async def engine(server: FakeOpenAIServer) -> AsyncIterator[OpenAICompatibleGenerator]:
    generator = OpenAICompatibleGenerator(f"{server.base_url}/v1", "fake-model", api_key=KEY, timeout_s=5)
    yield generator
    await generator.aclose()


async def test_streamed_chunks_become_deltas_and_usage_is_kept(
    server: FakeOpenAIServer, engine: OpenAICompatibleGenerator
) -> None:
    usage = Usage()
    deltas = [d async for d in engine.stream(QUESTION, usage=usage)]
    assert deltas == server.pieces() and len(deltas) > 1
    sent = server.requests[-1]
    assert sent["model"] == "fake-model" and sent["stream"] is True
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    reported = server.usage_sent[-1]
    assert usage.reported and usage.model == "fake-model"
    assert (usage.input_tokens, usage.output_tokens) == (
        reported["prompt_tokens"],
        reported["completion_tokens"],
    )


async def test_options_pick_another_model_and_a_lower_cap(
    server: FakeOpenAIServer, engine: OpenAICompatibleGenerator
) -> None:
    usage = Usage()
    options = GenerationOptions(max_tokens=30, model="fake-mini")
    [d async for d in engine.stream(QUESTION, options=options, usage=usage)]
    sent = server.requests[-1]
    assert (sent["model"], sent["max_tokens"]) == ("fake-mini", 30)
    assert usage.model == "fake-mini"
    [d async for d in engine.stream(QUESTION, options=GenerationOptions(max_tokens=10_000))]
    assert server.requests[-1]["max_tokens"] == 256, "an override never raises the engine's own cap"


async def test_one_client_serves_every_turn(
    server: FakeOpenAIServer, engine: OpenAICompatibleGenerator
) -> None:
    for _ in range(3):
        assert "".join([d async for d in engine.stream(QUESTION)]) == server.reply
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [401, 429, 500, 503])
async def test_an_http_error_is_a_generation_error_with_the_servers_message(
    server: FakeOpenAIServer, engine: OpenAICompatibleGenerator, status: int
) -> None:
    server.fail_status = status
    with pytest.raises(GenerationError, match=f"error {status}: fake failure") as caught:
        [d async for d in engine.stream(QUESTION)]
    assert KEY not in str(caught.value)


async def test_a_wrong_key_is_refused_without_echoing_it(server: FakeOpenAIServer) -> None:
    generator = OpenAICompatibleGenerator(f"{server.base_url}/v1", "m", api_key="sk-wrong-456")
    try:
        with pytest.raises(GenerationError, match="401") as caught:
            [d async for d in generator.stream(QUESTION)]
        assert "sk-wrong-456" not in str(caught.value)
    finally:
        await generator.aclose()


async def test_a_stream_cut_mid_reply_ends_with_an_error_not_a_hang(
    server: FakeOpenAIServer, engine: OpenAICompatibleGenerator
) -> None:
    server.drop_after = 2
    received: list[str] = []
    async with asyncio.timeout(10):
        with pytest.raises(GenerationError):
            async for delta in engine.stream(QUESTION):
                received.append(delta)
    assert received == server.pieces()[:2]


async def test_a_stalled_stream_times_out(server: FakeOpenAIServer) -> None:
    server.delay_s = 3.0
    generator = OpenAICompatibleGenerator(f"{server.base_url}/v1", "m", api_key=KEY, timeout_s=0.5)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(GenerationError, match="Timeout"):
                [d async for d in generator.stream(QUESTION)]
    finally:
        await generator.aclose()


async def test_no_server_is_a_generation_error() -> None:
    generator = OpenAICompatibleGenerator(f"http://127.0.0.1:{free_port_run()}/v1", "m", timeout_s=2)
    try:
        with pytest.raises(GenerationError, match="transport error"):
            [d async for d in generator.stream(QUESTION)]
    finally:
        await generator.aclose()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on the bundled model, one thread, loopback only."""
    port = free_port_run()
    log_path = tmp_path_factory.mktemp("llama-server") / "log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", bundled_model_path(), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", "1", "--n_ctx", "1024", "--model_alias", "smollm2",
        "--n_ubatch", "1",  # ggml's AMX matmul crashes on larger batches (see services/llm/llama.py)
    ]  # fmt: skip
    # Its log goes to a file: llama.cpp writes more while loading than a pipe holds, and would block.
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start within 120 s")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def test_llama_cpp_server_answers_through_the_engine_offline(llama_server: str) -> None:
    generator = OpenAICompatibleGenerator(llama_server, "smollm2", max_tokens=40, temperature=0.0)
    try:
        deltas = [d async for d in generator.stream(QUESTION)]
    finally:
        await generator.aclose()
    assert len(deltas) > 1, "the reply streams in pieces"
    assert any(ch.isalpha() for ch in "".join(deltas))
    # llama.cpp's server sends no usage chunk when streaming: usage is estimated for such servers.


async def test_the_llm_service_answers_through_a_configured_openai_server(
    bus: Bus, server: FakeOpenAIServer
) -> None:
    settings = LlmSettings(
        consumer_name="t", redis_url=bus.url, openai_base_url=f"{server.base_url}/v1", openai_model="m",
        openai_api_key=SecretStr(KEY), first_phrase_yield_ms=0,
    )  # fmt: skip
    service = LlmService(settings, bus)
    await service.load()
    assert service.generator is not None and service.generator.name == "openai:m"
    stop = asyncio.Event()
    out = StreamTail(bus, keys.session_out("s-openai"), label="test", block_ms=100)
    seen: list[Message] = []
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(service.run(stop))
            request = ReplyRequested(session_id="s-openai", turn_id=0, seq=0, text="Hi?", speech_ended_at=0)
            await bus.send(keys.LLM_REQUESTS, request)
            async with asyncio.timeout(20):
                while not any(isinstance(m, ReplyDone) for m in seen):
                    seen += [d.message for d in await out.read()]
            stop.set()
    finally:
        await out.close()
    phrases = [m.text for m in seen if isinstance(m, ReplyPhrase)]
    assert " ".join(phrases) == server.reply


async def _ask_with_tools(
    server: FakeOpenAIServer, *tools: Tool, filler_after_s: float = 5.0
) -> tuple[list[str], Usage]:
    """The reply's deltas and the usage the engine kept."""
    runner = ToolRunner(ToolRegistry(tools), filler_after_s=filler_after_s)
    generator = OpenAICompatibleGenerator(f"{server.base_url}/v1", "m", api_key=KEY, tools=runner)
    usage = Usage()
    try:
        return [d async for d in generator.stream(QUESTION, usage=usage)], usage
    finally:
        await generator.aclose()


async def test_a_tool_call_round_trips_and_the_answer_uses_its_result(server: FakeOpenAIServer) -> None:
    server.tool_call = ("calculate", '{"expression": "6 * 7"}')
    deltas, usage = await _ask_with_tools(server, calculator_tool())
    assert "42" in "".join(deltas)
    first, second = server.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["calculate"]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "calculate",
        "arguments": '{"expression": "6 * 7"}',
    }
    assert tool == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"expression": "6 * 7", "result": 42}',
    }
    assert usage.output_tokens == sum(u["completion_tokens"] for u in server.usage_sent)
    assert usage.tool_calls == 1 and usage.tool_failures == 0


async def test_a_failing_tool_gives_the_model_an_error_and_the_turn_goes_on(server: FakeOpenAIServer) -> None:
    server.tool_call = ("calculate", '{"expression": "__import__(1)"}')
    deltas, usage = await _ask_with_tools(server, calculator_tool())
    assert "error" in "".join(deltas) and "not allowed" in "".join(deltas)
    assert (usage.tool_calls, usage.tool_failures) == (1, 1)


async def test_a_slow_tool_makes_the_assistant_say_a_filler_first(server: FakeOpenAIServer) -> None:
    async def slow_lookup(args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.6)
        return {"answer": "found"}

    server.tool_call = ("lookup", "{}")
    lookup = Tool("lookup", "Look up.", {"type": "object"}, slow_lookup)
    deltas, _ = await _ask_with_tools(server, lookup, filler_after_s=0.1)
    assert deltas[0] == "Let me check. "
    assert "found" in "".join(deltas[1:])
