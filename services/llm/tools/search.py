"""Web search against a SearXNG-compatible JSON endpoint (`/search?format=json`)."""

from __future__ import annotations

from typing import Any

import httpx

from services.llm.tools.registry import Tool, ToolError, string_parameters

_MAX_RESULTS = 5
_MAX_SNIPPET = 300


def search_tool(client: httpx.AsyncClient, base_url: str) -> Tool:
    """The search tool over `client` (shared, created once)."""

    async def call(args: dict[str, Any]) -> dict[str, Any]:
        response = await client.get(
            f"{base_url.rstrip('/')}/search", params={"q": str(args["query"]), "format": "json"}
        )
        if response.status_code != 200:
            raise ToolError(f"the search service answered {response.status_code}")
        results = response.json().get("results") or []
        return {
            "query": args["query"],
            "results": [
                {
                    "title": r.get("title", ""),
                    "snippet": str(r.get("content", ""))[:_MAX_SNIPPET],
                    "url": r.get("url"),
                }
                for r in results[:_MAX_RESULTS]
            ],
        }

    return Tool(
        name="web_search",
        description="Search the web for current facts; returns titles and snippets of the top results.",
        parameters=string_parameters(query="what to search for"),
        call=call,
        timeout_s=6.0,
    )
