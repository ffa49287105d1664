"""The built-in tools a deployment offers, from its settings."""

from __future__ import annotations

import httpx

from services.llm.tools.calculator import calculator_tool
from services.llm.tools.clock import clock_tool
from services.llm.tools.registry import ToolRegistry
from services.llm.tools.search import search_tool
from services.llm.tools.weather import weather_tool


def builtin_tools(
    client: httpx.AsyncClient,
    *,
    time_zone: str = "UTC",
    weather_url: str | None = "https://api.open-meteo.com",
    geocoding_url: str | None = "https://geocoding-api.open-meteo.com",
    search_url: str | None = None,
) -> ToolRegistry:
    """Clock and calculator always; weather when its URLs are set; web search only when its URL is set."""
    tools = [clock_tool(time_zone), calculator_tool()]
    if weather_url and geocoding_url:
        tools.append(weather_tool(client, weather_url, geocoding_url))
    if search_url:
        tools.append(search_tool(client, search_url))
    return ToolRegistry(tools)
