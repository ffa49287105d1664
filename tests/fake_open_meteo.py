"""A local look-alike of Open-Meteo (geocoding and forecast) and of a SearXNG JSON search, on one port."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fake_server import ThreadedServer


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
