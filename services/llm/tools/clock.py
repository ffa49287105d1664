"""The current date and time in the user's time zone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.llm.tools.registry import Tool, ToolError, string_parameters


def clock_tool(default_zone: str = "UTC", now: Callable[[ZoneInfo], datetime] | None = None) -> Tool:
    """Date and time now; the model may ask for another IANA zone than the configured one."""
    current = now or (lambda zone: datetime.now(zone))

    async def call(args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("time_zone") or default_zone)
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolError(f"unknown time zone {name!r}") from exc
        moment = current(zone)
        return {
            "time_zone": name,
            "date": moment.strftime("%A, %B %-d, %Y"),
            "time": moment.strftime("%-I:%M %p"),
            "iso": moment.isoformat(timespec="seconds"),
        }

    return Tool(
        name="current_time",
        description="The current date and time (the user's time zone unless another IANA zone is given).",
        parameters=string_parameters(required=False, time_zone="IANA zone, e.g. Europe/Paris"),
        call=call,
        timeout_s=1.0,
    )
