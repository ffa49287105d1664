"""The HTTP tools with real httpx against local look-alikes of Open-Meteo and SearXNG."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.llm.tools.builtin import builtin_tools
from services.llm.tools.registry import ToolRegistry
from tests.fake_server import ThreadedServer

pytestmark = pytest.mark.integration


class FakeOpenMeteoAndSearx(ThreadedServer):
    """Geocoding, forecast and search on one port; `delay_s` slows every answer, `status` fails them."""

    thread_name = "fake-open-meteo"

    def __init__(self) -> None:
        super().__init__()
        self.delay_s = 0.0
        self.status = 200
        self.seen: list[dict[str, Any]] = []

    def routes(self) -> list[Route]:
        """The three endpoints the tools call."""
        return [
            Route("/v1/search", self._geocode),
            Route("/v1/forecast", self._forecast),
            Route("/search", self._search),
        ]

    async def _answer(self, request: Request, body: dict[str, Any]) -> JSONResponse:
        self.seen.append({"path": request.url.path, **request.query_params})
        await asyncio.sleep(self.delay_s)
        return JSONResponse(body if self.status == 200 else {"error": True}, status_code=self.status)

    async def _geocode(self, request: Request) -> JSONResponse:
        if request.query_params["name"].lower() != "oslo":
            return await self._answer(request, {"generationtime_ms": 0.1})
        place = {"name": "Oslo", "country": "Norway", "latitude": 59.91, "longitude": 10.75}
        return await self._answer(request, {"results": [place]})

    async def _forecast(self, request: Request) -> JSONResponse:
        current = {"time": "2026-11-26T10:00", "temperature_2m": -3.5, "apparent_temperature": -8.0,
                   "relative_humidity_2m": 80, "weather_code": 71, "wind_speed_10m": 12.2}  # fmt: skip
        return await self._answer(request, {"latitude": 59.91, "longitude": 10.75, "current": current})

    async def _search(self, request: Request) -> JSONResponse:
        results = [
            {"title": f"Result {i}", "content": "x" * 500, "url": f"https://r{i}.example"} for i in range(8)
        ]
        return await self._answer(request, {"query": request.query_params["q"], "results": results})


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
