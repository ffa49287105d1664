"""Running the tool calls of one model step: concurrently, each bounded by its tool's timeout, with a short
spoken filler when they take long enough for the silence to be noticed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from services.llm.tools.registry import ToolRegistry, ToolResult


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for; `call_id` ties the result back to it (OpenAI), may be empty (Gemini)."""

    name: str
    arguments: dict[str, Any] | str | None
    call_id: str = ""


class ToolRunner:
    """Runs calls against `registry`; `filler` is said if they are not all done after `filler_after_s`."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        filler: str = "Let me check.",
        filler_after_s: float = 0.8,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.registry = registry
        self.filler = filler
        self.filler_after_s = filler_after_s
        self._http = http

    async def aclose(self) -> None:
        """Close the HTTP client the tools share, if this runner owns one."""
        if self._http is not None:
            await self._http.aclose()

    async def run(self, calls: Sequence[ToolCall], results: list[ToolResult]) -> AsyncIterator[str]:
        """Yield the filler (at most once) while the calls run; their results are appended to `results`."""
        work = asyncio.ensure_future(
            asyncio.gather(*(self.registry.invoke(call.name, call.arguments) for call in calls))
        )
        try:
            done, _ = await asyncio.wait({work}, timeout=self.filler_after_s)
            if not done and self.filler:
                yield f"{self.filler} "
            results.extend(await work)
        finally:
            if not work.done():
                work.cancel()  # the consumer left (cancel or close): the calls stop with it
                await asyncio.gather(work, return_exceptions=True)
