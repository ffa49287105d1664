"""Client-side function calls in the LLM's OpenAI-compatible engine (for OpenAI Realtime clients), against
the local look-alike: the client's tools are offered, a call to one ends the reply instead of being run, and
a later prompt carries the call and its output as the chat API wants them. Engines without client function
calling see calls and outputs as text; a call never answered is left out of the prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.llm.engine import (
    ChatMessage,
    GenerationOptions,
    Usage,
    as_text_messages,
    paired_tool_messages,
)
from services.llm.openai_compat import OpenAICompatibleGenerator
from shared.schema import ClientTool
from tests.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.integration

KEY = "sk-test-realtime"
TOOL = ClientTool(
    name="get_weather", description="The weather.",
    parameters={"type": "object", "properties": {"location": {"type": "string"}}},
)  # fmt: skip
ASKED = [ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Oslo?")]


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeOpenAIServer, OpenAICompatibleGenerator]]:
    async with FakeOpenAIServer(api_key=KEY) as server:
        server.tool_call = ("get_weather", '{"location": "Oslo"}')
        engine = OpenAICompatibleGenerator(f"{server.base_url}/v1", "fake-model", api_key=KEY, timeout_s=5)
        try:
            yield server, engine
        finally:
            await engine.aclose()


async def test_a_call_of_a_client_tool_ends_the_reply_and_is_recorded(
    served: tuple[FakeOpenAIServer, OpenAICompatibleGenerator],
) -> None:
    server, engine = served
    usage = Usage()
    options = GenerationOptions(client_tools=(TOOL,))
    deltas = [delta async for delta in engine.stream(ASKED, options=options, usage=usage)]
    assert deltas == []
    assert [(c.call_id, c.name, c.arguments) for c in usage.function_calls] == [
        ("call_1", "get_weather", '{"location": "Oslo"}')
    ]
    assert len(server.requests) == 1, "the client runs the call: no second step"
    offered = server.requests[0]["tools"]
    assert [t["function"]["name"] for t in offered] == ["get_weather"]


async def test_the_call_and_its_output_go_back_as_tool_messages(
    served: tuple[FakeOpenAIServer, OpenAICompatibleGenerator],
) -> None:
    server, engine = served
    history = [
        *ASKED,
        ChatMessage("tool_call", '{"location": "Oslo"}', call_id="call_1", name="get_weather"),
        ChatMessage("tool", '{"sky": "clear"}', call_id="call_1"),
    ]
    reply = "".join(
        [d async for d in engine.stream(history, options=GenerationOptions(client_tools=(TOOL,)))]
    )
    assert "clear" in reply
    sent = server.requests[-1]["messages"]
    function = {"name": "get_weather", "arguments": '{"location": "Oslo"}'}
    calls = [{"id": "call_1", "type": "function", "function": function}]
    assert sent[-2] == {"role": "assistant", "content": None, "tool_calls": calls}
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'}


def test_unanswered_calls_are_left_out_and_other_engines_read_calls_as_text() -> None:
    call = ChatMessage("tool_call", "{}", call_id="a", name="f")
    lone = ChatMessage("tool_call", "{}", call_id="b", name="g")
    output = ChatMessage("tool", "42", call_id="a")
    stray = ChatMessage("tool", "7", call_id="c")
    assert paired_tool_messages([*ASKED, call, lone, output, stray]) == [*ASKED, call, output]
    plain = as_text_messages([call, output])
    assert [m.role for m in plain] == ["assistant", "user"] and "f" in plain[0].text and "42" in plain[1].text
