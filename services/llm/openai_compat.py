"""Any OpenAI-compatible `/v1/chat/completions` server (vLLM, Ollama, llama.cpp's server, hosted ones),
streamed over server-sent events with httpx."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from services.llm.engine import ChatMessage, GenerationError


class OpenAICompatibleGenerator:
    """Generator on an OpenAI-style chat completions endpoint at `base_url` (e.g. http://host:8000/v1).

    One client per generator, created once: its connection pool stays warm between turns, and it speaks
    HTTP/2 to servers that offer it (TLS with ALPN); plain http:// stays HTTP/1.1.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.2,
        timeout_s: float = 30.0,
    ) -> None:
        self.name = f"openai:{model}"
        self.model = model
        self._api_key = api_key
        self._max_tokens = max_tokens
        self._temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Read timeout between two chunks: a stalled stream ends the turn instead of hanging it.
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            http2=True,
        )
        self.last_usage: dict[str, int] | None = None
        """The token usage the server reported for the last completed stream, if it reported any."""

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        """Yield text deltas; HTTP, protocol and transport failures become GenerationError."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.text} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
        }
        self.last_usage = None
        try:
            async with aconnect_sse(self._client, "POST", "chat/completions", json=body) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    raise GenerationError(self._redact(_error_text(response)))
                finished = False
                async for event in source.aiter_sse():
                    if event.data.strip() == "[DONE]":
                        finished = True
                        break
                    chunk = _parse_chunk(event.data)
                    if "error" in chunk:
                        error = f"openai-compatible stream error: {chunk['error']}"
                        raise GenerationError(self._redact(error))
                    if isinstance(chunk.get("usage"), dict):
                        self.last_usage = {k: v for k, v in chunk["usage"].items() if isinstance(v, int)}
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if isinstance(text, str) and text:
                            yield text
                        if choice.get("finish_reason"):
                            finished = True
                if not finished:
                    raise GenerationError("openai-compatible stream ended before the reply was complete")
        except (httpx.HTTPError, SSEError) as exc:
            raise GenerationError(
                self._redact(f"openai-compatible transport error: {type(exc).__name__}: {exc}")
            ) from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise GenerationError(f"openai-compatible stream sent invalid JSON: {exc}") from exc
    if not isinstance(chunk, dict):
        raise GenerationError("openai-compatible stream sent a chunk that is not an object")
    return chunk


def _error_text(response: httpx.Response) -> str:
    """`openai-compatible error 429: <the server's message>`, from the usual {"error": {...}} body or text."""
    message = response.text[:300]
    try:
        detail = response.json().get("error")
    except (json.JSONDecodeError, AttributeError):
        detail = None
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        message = detail["message"]
    elif isinstance(detail, str):
        message = detail
    return f"openai-compatible error {response.status_code}: {message}"
