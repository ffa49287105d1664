"""Current weather from Open-Meteo (no key): the place is geocoded, then its current conditions read."""

from __future__ import annotations

from typing import Any

import httpx

from services.llm.tools.registry import Tool, ToolError, string_parameters

_CURRENT = "temperature_2m,apparent_temperature,relative_humidity_2m,weather_code,wind_speed_10m"
# WMO weather interpretation codes, as Open-Meteo documents them.
_CONDITIONS = {
    0: "clear sky", 1: "mainly clear", 2: "partly cloudy", 3: "overcast", 45: "fog", 48: "rime fog",
    51: "light drizzle", 53: "drizzle", 55: "dense drizzle", 56: "freezing drizzle", 57: "freezing drizzle",
    61: "light rain", 63: "rain", 65: "heavy rain", 66: "freezing rain", 67: "freezing rain",
    71: "light snow", 73: "snow", 75: "heavy snow", 77: "snow grains", 80: "light showers", 81: "showers",
    82: "violent showers", 85: "snow showers", 86: "heavy snow showers", 95: "thunderstorm",
    96: "thunderstorm with hail", 99: "thunderstorm with heavy hail",
}  # fmt: skip


def weather_tool(client: httpx.AsyncClient, forecast_url: str, geocoding_url: str) -> Tool:
    """The weather tool over `client` (shared, created once), against Open-Meteo or a compatible server."""

    async def call(args: dict[str, Any]) -> dict[str, Any]:
        place = await _geocode(client, geocoding_url, str(args["location"]))
        response = await client.get(
            f"{forecast_url.rstrip('/')}/v1/forecast",
            params={
                "latitude": place["latitude"], "longitude": place["longitude"],
                "current": _CURRENT,
                "timezone": "auto",
            },
        )  # fmt: skip
        _check(response)
        current = response.json().get("current") or {}
        return {
            "location": ", ".join(p for p in (place.get("name"), place.get("country")) if p),
            "conditions": _CONDITIONS.get(int(current.get("weather_code", -1)), "unknown"),
            "temperature_celsius": current.get("temperature_2m"),
            "feels_like_celsius": current.get("apparent_temperature"),
            "humidity_percent": current.get("relative_humidity_2m"),
            "wind_kmh": current.get("wind_speed_10m"),
            "observed_at": current.get("time"),
        }

    return Tool(
        name="get_weather",
        description="Current weather (conditions, temperature in °C, wind) for a city or place name.",
        parameters=string_parameters(location="a city or place, e.g. Paris"),
        call=call,
    )


async def _geocode(client: httpx.AsyncClient, geocoding_url: str, name: str) -> dict[str, Any]:
    response = await client.get(
        f"{geocoding_url.rstrip('/')}/v1/search", params={"name": name, "count": 1, "format": "json"}
    )
    _check(response)
    results = response.json().get("results") or []
    if not results:
        raise ToolError(f"no place called {name!r} was found")
    place: dict[str, Any] = results[0]
    return place


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise ToolError(f"the weather service answered {response.status_code}")
