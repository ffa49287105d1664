"""The HTTP tools with real httpx against local look-alikes of Open-Meteo and SearXNG."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from services.llm.tools.builtin import builtin_tools
from services.llm.tools.registry import ToolRegistry
from tests.fake_open_meteo import FakeOpenMeteoAndSearx

pytestmark = pytest.mark.integration


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenMeteoAndSearx]:
    async with FakeOpenMeteoAndSearx() as server:
        yield server


@pytest.fixture
async def tools(fake: FakeOpenMeteoAndSearx) -> AsyncIterator[ToolRegistry]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield builtin_tools(
            client, weather_url=fake.base_url, geocoding_url=fake.base_url, search_url=fake.base_url
        )


async def test_the_weather_of_a_place(fake: FakeOpenMeteoAndSearx, tools: ToolRegistry) -> None:
    result = await tools.invoke("get_weather", {"location": "Oslo"})
    assert result.ok, result.content
    assert result.content["location"] == "Oslo, Norway"
    assert result.content["temperature_celsius"] == -3.5 and result.content["conditions"] == "light snow"
    forecast = next(s for s in fake.seen if s["path"] == "/v1/forecast")
    assert forecast["latitude"] == "59.91" and forecast["longitude"] == "10.75"


async def test_an_unknown_place_or_a_failing_service_is_an_error_result(
    fake: FakeOpenMeteoAndSearx, tools: ToolRegistry
) -> None:
    unknown = await tools.invoke("get_weather", {"location": "Atlantis"})
    assert not unknown.ok and "Atlantis" in unknown.content["error"]["message"]
    fake.status = 503
    failing = await tools.invoke("get_weather", {"location": "Oslo"})
    assert not failing.ok and "503" in failing.content["error"]["message"]


async def test_a_slow_weather_service_times_out(fake: FakeOpenMeteoAndSearx, tools: ToolRegistry) -> None:
    fake.delay_s = 8.0
    async with asyncio.timeout(7):
        result = await tools.invoke("get_weather", {"location": "Oslo"})
    assert not result.ok and result.content["error"]["code"] == "timeout"


async def test_search_returns_a_few_short_results(tools: ToolRegistry) -> None:
    result = await tools.invoke("web_search", {"query": "voxmesh"})
    assert result.ok and len(result.content["results"]) == 5
    assert all(len(r["snippet"]) <= 300 for r in result.content["results"])


async def test_search_is_off_without_a_url() -> None:
    async with httpx.AsyncClient() as client:
        registry = builtin_tools(client, search_url=None)
    assert "web_search" not in registry and "current_time" in registry and "calculate" in registry
