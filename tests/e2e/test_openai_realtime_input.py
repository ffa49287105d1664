"""Turn detection and the input buffer through OpenAI's Realtime protocol, driven by the unmodified `openai`
SDK through the real mesh with the bundled models (Whisper, SmolLM2, piper): server VAD's
`silence_duration_ms` decides whether a mid-sentence pause ends the turn, push-to-talk
(`turn_detection: null`) gets no turn until `input_audio_buffer.commit`, `clear` drops the audio, and
`create_response: false` waits for `response.create`. Every server event is parsed strictly with the SDK's
own models (tests/openai_realtime_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.redis_server import LocalRedisServer, server_binary_for
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.openai_realtime_support import Client, audio_bytes, connected

pytestmark = pytest.mark.e2e

HEAD, TAIL = "Tell me about the capital of", "France."
QUESTION = "What is the capital of France?"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def bundled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with LocalRedisServer(server_binary_for("bundled")) as redis:
        stack = start_stack(tmp_path_factory.mktemp("openai-input") / "services.log", redis.url)
        try:
            yield stack
        finally:
            stop_stack(stack)
        assert stack.process.returncode == 0, stack.log_path.read_text()[-3000:]


async def _turn_detection(client: Client, turn_detection: dict[str, Any] | None) -> Any:
    at = len(client.events)
    await client.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": turn_detection}}}}
    )  # fmt: skip
    _, updated = await client.wait_type("session.updated", after=at, timeout_s=10)
    return updated.session.audio.input.turn_detection


async def test_a_short_silence_setting_ends_the_turn_at_a_mid_sentence_pause(
    bundled_stack: RunningStack,
) -> None:
    """With the ASR's own settings an unfinished sentence is given 1.2 s to go on: a 0.8 s pause stays inside
    the turn. 200 ms of silence ends it there."""
    async with connected(bundled_stack.port) as client:
        await client.wait_type("session.created")
        detection = await _turn_detection(client, {"type": "server_vad", "silence_duration_ms": 200})
        assert detection.silence_duration_ms == 200
        client.say(HEAD)
        client.pause(800)
        client.say(TAIL)
        _, tail = await client.wait_for(
            lambda e: e.type == COMPLETED and "france" in str(getattr(e, "transcript", "")).lower(),
            timeout_s=120,
        )
    head = client.of_type(COMPLETED)[0]
    assert head.item_id != tail.item_id, "the pause ended a turn: France came in a turn of its own"
    assert "capital" in head.transcript.lower() or "tell" in head.transcript.lower(), head.transcript


async def test_a_long_silence_setting_keeps_a_long_mid_sentence_pause_in_one_turn(
    bundled_stack: RunningStack,
) -> None:
    """With the ASR's own settings a 1.8 s pause ends even an unfinished sentence; 3 s of silence does not."""
    async with connected(bundled_stack.port) as client:
        await client.wait_type("session.created")
        await _turn_detection(client, {"type": "server_vad", "silence_duration_ms": 3000})
        client.say(HEAD)
        client.pause(1800)
        client.say(TAIL)
        _, whole = await client.wait_type(COMPLETED, timeout_s=120)
        _, done = await client.wait_type("response.done", timeout_s=120)
    transcript = whole.transcript.lower()
    assert "capital" in transcript and "france" in transcript, whole.transcript
    assert done.response.status == "completed"


async def test_push_to_talk_gets_no_turn_until_commit_and_clear_drops_the_audio(
    bundled_stack: RunningStack,
) -> None:
    async with connected(bundled_stack.port) as client:
        await client.wait_type("session.created")
        assert await _turn_detection(client, None) is None

        client.say("Tell me a joke about cats.")
        client.pause(500)
        await client.mic_idle.wait()
        at = len(client.events)
        await client.connection.input_audio_buffer.clear()
        await client.wait_type("input_audio_buffer.cleared", after=at, timeout_s=10)

        client.say(QUESTION)
        client.pause(2000)  # server VAD would have ended the turn in this silence
        await client.mic_idle.wait()
        assert not client.of_type("input_audio_buffer.speech_started")
        assert not client.of_type("input_audio_buffer.committed")
        commit = len(client.events)
        await client.connection.input_audio_buffer.commit()
        await client.connection.response.create()  # at once, as Pipecat does: it answers what was committed
        _, committed = await client.wait_type("input_audio_buffer.committed", after=commit)
        _, completed = await client.wait_type(COMPLETED, after=commit)
        assert completed.item_id == committed.item_id
        transcript = completed.transcript.lower()
        assert "france" in transcript and "cat" not in transcript and "joke" not in transcript, transcript
        _, done = await client.wait_type("response.done", after=commit, timeout_s=120)
    assert done.response.status == "completed", done
    assert audio_bytes(client, done.response.id) > 0
    assert len(client.of_type("response.created", commit)) == 1
    assert client.index(COMPLETED, commit) < client.index("response.created", commit), "words first"
    assert not client.of_type("error", commit)
    assert not client.of_type("input_audio_buffer.speech_started"), "no VAD events with detection off"


async def test_an_empty_commit_is_an_error_and_create_response_false_waits_for_response_create(
    bundled_stack: RunningStack,
) -> None:
    async with connected(bundled_stack.port) as client:
        await client.wait_type("session.created")
        await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_commit"})
        _, error = await client.wait_type("error", timeout_s=10)
        assert error.error.code == "input_audio_buffer_commit_empty" and error.error.event_id == "evt_commit"

        detection = await _turn_detection(client, {"type": "server_vad", "create_response": False})
        assert detection.create_response is False
        spoken = len(client.events)
        client.say(QUESTION)
        client.pause(2500)
        _, completed = await client.wait_type(COMPLETED, after=spoken, timeout_s=120)
        assert "france" in completed.transcript.lower(), completed.transcript
        await client.mic_idle.wait()
        asked = len(client.events)
        assert not client.of_type("response.created", spoken), "no response until response.create"
        await client.connection.response.create()
        _, done = await client.wait_type("response.done", after=asked, timeout_s=120)
    assert done.response.status == "completed", done
    assert audio_bytes(client, done.response.id) > 0
