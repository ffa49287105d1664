"""A spoken question through OpenAI's Realtime protocol, as the unmodified `openai` SDK sends it: 24 kHz PCM
appended in real time with server VAD, through the real mesh with the bundled models (Whisper, SmolLM2,
piper). Every server event is parsed strictly with the SDK's own models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.redis_server import LocalRedisServer, server_binary_for
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.openai_realtime_support import audio_bytes, connected

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bundled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with LocalRedisServer(server_binary_for("bundled")) as redis:
        stack = start_stack(tmp_path_factory.mktemp("openai-sdk") / "services.log", redis.url)
        try:
            yield stack
        finally:
            stop_stack(stack)
        assert stack.process.returncode == 0, stack.log_path.read_text()[-3000:]


async def test_a_spoken_question_gets_a_transcript_spoken_audio_and_a_done_response_with_usage(
    bundled_stack: RunningStack,
) -> None:
    async with connected(bundled_stack.port) as client:
        _, created = await client.wait_type("session.created")
        assert created.session.audio.input.format.rate == 24_000
        await client.connection.session.update(
            session={
                "type": "realtime", "instructions": "Answer in one short sentence.",
                "audio": {"input": {"transcription": {"model": "whisper-1"},
                                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                          "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
            }
        )  # fmt: skip
        _, updated = await client.wait_type("session.updated")
        assert updated.session.instructions == "Answer in one short sentence."
        client.say("What is the capital of France?")
        _, done = await client.wait_type("response.done", timeout_s=120)

    assert done.response.status == "completed", done
    order = [
        client.index("input_audio_buffer.speech_started"),
        client.index("input_audio_buffer.speech_stopped"),
        client.index("input_audio_buffer.committed"),
        client.index("conversation.item.input_audio_transcription.completed"),
        client.index("response.created"),
        client.index("response.output_item.added"),
        client.index("response.output_audio.delta"),
        client.index("response.output_audio.done"),
        client.index("response.done"),
    ]
    assert -1 not in order and order == sorted(order), order
    transcript = client.of_type("conversation.item.input_audio_transcription.completed")[0].transcript
    assert "france" in transcript.lower(), transcript
    assert audio_bytes(client, done.response.id) > 24_000, "at least half a second of speech at 24 kHz"
    assert client.of_type("response.output_audio_transcript.delta"), "the reply's words came with it"
    spoken = client.of_type("response.output_audio_transcript.done")[0].transcript
    assert spoken and done.response.output[0].content[0].transcript == spoken
    usage = done.response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_a_typed_question_gets_a_spoken_answer_from_the_bundled_model(
    bundled_stack: RunningStack,
) -> None:
    async with connected(bundled_stack.port) as client:
        await client.wait_type("session.created")
        await client.connection.conversation.item.create(
            item={"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": "What is the capital of France?"}]}
        )  # fmt: skip
        await client.connection.response.create()
        _, done = await client.wait_type("response.done", timeout_s=120)
    assert done.response.status == "completed", done
    assert audio_bytes(client, done.response.id) > 24_000, "at least half a second of speech at 24 kHz"
    assert client.of_type("response.output_audio_transcript.done")[0].transcript
    assert not client.of_type("input_audio_buffer.speech_started"), "no speech was heard in the silence"
