"""OpenAI's Realtime protocol through the whole mesh, driven by the unmodified `openai` SDK: typed turns,
malformed events, barge-in with truncation, and a client-side function call. Real Redis, real Whisper and
piper; the LLM service answers through its OpenAI-compatible engine from a local look-alike
(tests/fake_openai.py), so replies and function calls are known. Every server event is parsed strictly with
the SDK's own models (tests/openai_realtime_support.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from shared.redis_server import LocalRedisServer, server_binary_for
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.fake_openai import FakeOpenAIServer
from tests.openai_realtime_support import audio_bytes, connected

pytestmark = pytest.mark.e2e

STORY = (
    "Once upon a time the moon lived alone in a very dark sky. Every night she looked down at the sea. "
    "The sea was full of silver fish that sang quiet songs. The moon wanted to sing with them. "
    "So she asked the wind to carry her voice across the water. The wind agreed and blew softly. "
    "The fish heard a new song and they swam up to the waves. They sang together until the morning came."
)
WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "The weather at a place.",
    "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"],
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, FakeOpenAIServer, str]]:
    with (
        LocalRedisServer(server_binary_for("bundled")) as redis,
        FakeOpenAIServer(api_key="sk-e2e", reply=STORY) as model,
        pytest.MonkeyPatch.context() as env,
    ):
        model.tool_call = ("get_weather", '{"location": "Oslo"}')
        env.setenv("VOXMESH_LLM_OPENAI_BASE_URL", f"{model.base_url}/v1")
        env.setenv("VOXMESH_LLM_OPENAI_API_KEY", "sk-e2e")
        env.setenv("VOXMESH_LLM_TOOLS", "false")
        stack = start_stack(tmp_path_factory.mktemp("openai-stack") / "services.log", redis.url)
        try:
            yield stack, model, redis.url
        finally:
            stop_stack(stack)
        assert stack.process.returncode == 0, stack.log_path.read_text()[-3000:]


async def test_malformed_events_get_errors_and_a_typed_question_still_gets_a_spoken_answer(
    mesh: tuple[RunningStack, FakeOpenAIServer, str],
) -> None:
    stack, model, _ = mesh
    model.reply = "Paris is the capital of France."
    async with connected(stack.port) as client:
        await client.wait_type("session.created")
        bad: list[tuple[str | dict[str, object], str]] = [
            ("not json", "invalid_json"),
            ({"type": "no.such.event"}, "unknown_event"),
            ({"type": "input_audio_buffer.append", "audio": 12}, "invalid_value"),
            ({"type": "input_audio_buffer.append", "audio": "***"}, "invalid_value"),
            ({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}},
             "unsupported_audio_format"),
            ({"type": "conversation.item.delete", "item_id": "item_1"}, "unsupported_event"),
            ({"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0,
              "audio_end_ms": 5}, "invalid_value"),
            ({"type": "response.cancel"}, "response_cancel_not_active"),
        ]  # fmt: skip
        for event, code in bad:
            at = len(client.events)
            if isinstance(event, str):
                await client.connection.send_raw(event)
            else:
                await client.send({**event, "event_id": "evt_client_1"})
            _, error = await client.wait_type("error", after=at, timeout_s=10)
            assert error.error.code == code, (event, error)
            assert error.error.type == "invalid_request_error"
            if not isinstance(event, str) and code != "unknown_event":
                assert error.error.event_id == "evt_client_1"

        at = len(client.events)
        await client.connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Capital?"}]}
        )
        await client.connection.response.create()
        _, done = await client.wait_type("response.done", after=at)
        assert done.response.status == "completed", done
        assert client.index("conversation.item.added", at) < client.index("response.created", at)
        assert audio_bytes(client, done.response.id) > 24_000, "at least half a second of speech"
        transcript = client.of_type("response.output_audio_transcript.done", at)[-1].transcript
        assert "Paris" in transcript
        assert done.response.usage is not None and done.response.usage.output_tokens > 0
        assert model.requests[-1]["messages"][-1] == {"role": "user", "content": "Capital?"}


async def test_talking_over_a_response_cancels_it_and_truncate_keeps_only_the_heard_part(
    mesh: tuple[RunningStack, FakeOpenAIServer, str],
) -> None:
    stack, model, redis_url = mesh
    model.reply = STORY
    async with connected(stack.port) as client:
        await client.wait_type("session.created")
        await client.connection.conversation.item.create(
            item={"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": "Tell me a long story about the moon."}]}
        )  # fmt: skip
        await client.connection.response.create()
        first_audio, delta = await client.wait_type("response.output_audio.delta")
        story_id, story_item = delta.response_id, delta.item_id
        client.say("How many days are in a week?")
        started, _ = await client.wait_type("input_audio_buffer.speech_started", after=first_audio)
        _, cancelled = await client.wait_for(
            lambda e: e.type == "response.done" and e.response.id == story_id, after=first_audio
        )
        assert cancelled.response.status == "cancelled"
        assert cancelled.response.status_details.reason == "turn_detected"
        # As a player that had played 1.5 s of the story when the user spoke:
        at = len(client.events)
        await client.connection.conversation.item.truncate(
            item_id=story_item, content_index=0, audio_end_ms=1500
        )
        _, truncated = await client.wait_type("conversation.item.truncated", after=at, timeout_s=10)
        assert truncated.item_id == story_item and truncated.audio_end_ms == 1500
        _, answer = await client.wait_for(
            lambda e: e.type == "response.done" and e.response.id != story_id, after=started
        )
        assert answer.response.status == "completed"
    histories = await _all_histories(redis_url)
    story = next(h for h in histories if any("moon" in str(e["text"]) for e in h if e["role"] == "user"))
    heard = next(e for e in story if e["role"] == "assistant")
    assert heard["interrupted"] is True
    assert 0 < len(str(heard["text"]).split()) < len(STORY.split()) / 2, heard
    assert STORY.startswith(str(heard["text"]).rstrip("…")), heard


async def _all_histories(redis_url: str) -> list[list[dict[str, object]]]:
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter("vm:history:*")]
        return [[json.loads(item) for item in await redis.lrange(key, 0, -1)] for key in keys]
    finally:
        await redis.aclose()


async def test_a_client_side_function_call_round_trips(
    mesh: tuple[RunningStack, FakeOpenAIServer, str],
) -> None:
    stack, model, _ = mesh
    async with connected(stack.port) as client:
        await client.wait_type("session.created")
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER_TOOL]}}
        )
        _, updated = await client.wait_type("session.updated")
        assert [tool.name for tool in updated.session.tools] == ["get_weather"]
        at = len(client.events)
        await client.connection.conversation.item.create(
            item={"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": "What is the weather in Oslo?"}]}
        )  # fmt: skip
        await client.connection.response.create()
        _, call = await client.wait_type("response.function_call_arguments.done", after=at)
        assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "Oslo"}
        _, done = await client.wait_type("response.done", after=at)
        assert done.response.status == "completed"
        assert [item.type for item in done.response.output or []] == ["function_call"]

        at = len(client.events)
        await client.connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}
        )
        await client.connection.response.create()
        _, answer = await client.wait_type("response.done", after=at)
        assert answer.response.status == "completed"
        transcript = client.of_type("response.output_audio_transcript.done", at)[-1].transcript
        assert "sunny" in transcript, transcript
        assert audio_bytes(client, answer.response.id) > 0
    asked = model.requests[-1]["messages"]
    assert asked[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert asked[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"sky": "sunny"}'}
