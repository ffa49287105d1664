"""A spoken question whose answer needs a tool, through the whole mesh: the LLM service on an
OpenAI-compatible server (a local look-alike that asks for the weather tool), the tool against a local
Open-Meteo look-alike, the reply spoken back. The reply's text carries the tool's data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.talk import talk
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.fake_open_meteo import FakeOpenMeteoAndSearx
from tests.fake_openai import FakeOpenAIServer
from tests.speech import speech_wav

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tool_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, FakeOpenAIServer]]:
    with FakeOpenAIServer(api_key="sk-e2e") as model, FakeOpenMeteoAndSearx() as weather:
        model.tool_call = ("get_weather", '{"location": "Oslo"}')
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VOXMESH_LLM_OPENAI_BASE_URL", f"{model.base_url}/v1")
            env.setenv("VOXMESH_LLM_OPENAI_API_KEY", "sk-e2e")
            env.setenv("VOXMESH_LLM_WEATHER_URL", weather.base_url)
            env.setenv("VOXMESH_LLM_GEOCODING_URL", weather.base_url)
            stack = start_stack(tmp_path_factory.mktemp("tool-stack") / "services.log", redis_url=None)
        try:
            yield stack, model
        finally:
            stop_stack(stack)


async def test_a_spoken_weather_question_is_answered_with_the_tools_data(
    tool_stack: tuple[RunningStack, FakeOpenAIServer], tmp_path: Path
) -> None:
    stack, model = tool_stack
    question = speech_wav(tmp_path / "weather.wav", "What is the weather like in Oslo today?")
    result = await talk(question, url=stack.url, timeout_s=90)
    assert (
        "weather" in result.transcript.lower()
    )  # Whisper tiny hears "Oslo" as it likes; the model asks for it
    assert "light snow" in result.reply_text and "-3.5" in result.reply_text, result.reply_text
    assert result.reply_audio, "the answer was spoken"
    asked = model.requests[0]
    assert "get_weather" in [t["function"]["name"] for t in asked["tools"]]
    assert asked["messages"][-1]["content"] == result.transcript, "the model got what the user said"
