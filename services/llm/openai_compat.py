"""Any OpenAI-compatible `/v1/chat/completions` server (vLLM, Ollama, llama.cpp's server, hosted ones),
streamed over server-sent events with httpx."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from services.llm.engine import ChatMessage, FunctionCallRequest, GenerationError, GenerationOptions, Usage
from services.llm.tools.registry import ToolResult
from services.llm.tools.runner import ToolCall, ToolRunner
from shared.schema import ClientTool

# Model steps in one reply: a tool call and the answer that uses it, with room for a second call.
_MAX_STEPS = 4


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
        tools: ToolRunner | None = None,
    ) -> None:
        self.name = f"openai:{model}"
        self._tools = tools
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

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        usage: Usage | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield text deltas; tool calls are run and their results fed back within the same reply. HTTP,
        protocol and transport failures become GenerationError. The server's usage chunks (all steps) go
        into `usage`."""
        options = options or GenerationOptions()
        usage = usage if usage is not None else Usage()
        usage.model = options.model or self.model
        max_tokens = min(self._max_tokens, options.max_tokens or self._max_tokens)
        conversation: list[dict[str, Any]] = [_wire_message(m) for m in messages]
        client = [_client_schema(tool) for tool in options.client_tools]
        for _ in range(_MAX_STEPS):
            calls: list[ToolCall] = []
            async for delta in self._step(conversation, calls, usage, max_tokens, client):
                yield delta
            ends = [c for c in calls if c.name in {tool.name for tool in options.client_tools}]
            if ends:  # the client runs these: the reply ends with them
                usage.function_calls += [
                    FunctionCallRequest(c.call_id, c.name, str(c.arguments)) for c in ends
                ]
                return
            if not calls or self._tools is None:
                return
            results: list[ToolResult] = []
            usage.tool_calls += len(calls)
            async for filler in self._tools.run(calls, results):
                yield filler
            usage.tool_failures += sum(not result.ok for result in results)
            conversation.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ]})  # fmt: skip
            conversation += [
                {"role": "tool", "tool_call_id": c.call_id, "content": r.as_json()}
                for c, r in zip(calls, results, strict=True)
            ]
        raise GenerationError(f"the model kept calling tools after {_MAX_STEPS} steps")

    async def _step(
        self,
        conversation: list[dict[str, Any]],
        calls: list[ToolCall],
        usage: Usage,
        max_tokens: int,
        client_tools: list[dict[str, Any]],
    ) -> AsyncGenerator[str, None]:
        """One request: yield its text, collect the tool calls it ends with into `calls`."""
        body: dict[str, Any] = {
            "model": usage.model,
            "messages": conversation,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": self._temperature,
        }
        tools = self._tools.registry.openai_schemas() if self._tools is not None else []
        if tools + client_tools:
            body["tools"] = tools + client_tools
        pending: dict[int, dict[str, str]] = {}  # tool calls by index, their arguments arriving in pieces
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
                    texts, ended = self._take(_parse_chunk(event.data), pending, usage)
                    for text in texts:
                        yield text
                    finished = finished or ended
                if not finished:
                    raise GenerationError("openai-compatible stream ended before the reply was complete")
        except (httpx.HTTPError, SSEError) as exc:
            raise GenerationError(
                self._redact(f"openai-compatible transport error: {type(exc).__name__}: {exc}")
            ) from exc
        calls += [
            ToolCall(c["name"], c["arguments"], c["id"] or f"call_{i}") for i, c in sorted(pending.items())
        ]

    def _take(
        self, chunk: dict[str, Any], pending: dict[int, dict[str, str]], usage: Usage
    ) -> tuple[list[str], bool]:
        """One chunk's text deltas and whether it finishes the step; usage and tool calls are kept."""
        if "error" in chunk:
            raise GenerationError(self._redact(f"openai-compatible stream error: {chunk['error']}"))
        if isinstance(reported := chunk.get("usage"), dict):
            usage.add_tokens(_count(reported, "prompt_tokens"), _count(reported, "completion_tokens"))
        texts: list[str] = []
        finished = False
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(text := delta.get("content"), str) and text:
                texts.append(text)
            for piece in delta.get("tool_calls") or []:
                _merge_tool_call(pending, piece)
            finished = finished or bool(choice.get("finish_reason"))
        return texts, finished

    async def aclose(self) -> None:
        """Close the connection pools (the model's and the tools')."""
        await self._client.aclose()
        if self._tools is not None:
            await self._tools.aclose()

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    """A chat message in the API's shape; client-side function calls as `tool_calls` and `tool` results."""
    if message.role == "tool_call":
        call = {"name": message.name, "arguments": message.text}
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": message.call_id, "type": "function", "function": call}]}  # fmt: skip
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.call_id, "content": message.text}
    return {"role": message.role, "content": message.text}


def _client_schema(tool: ClientTool) -> dict[str, Any]:
    function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
    return {"type": "function", "function": function}


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def _merge_tool_call(pending: dict[int, dict[str, str]], piece: dict[str, Any]) -> None:
    """Streamed tool calls come in pieces by index: the id and name once, the arguments split."""
    call = pending.setdefault(int(piece.get("index", 0)), {"id": "", "name": "", "arguments": ""})
    function = piece.get("function") or {}
    call["id"] = piece.get("id") or call["id"]
    call["name"] = function.get("name") or call["name"]
    call["arguments"] += function.get("arguments") or ""


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
