"""A local server speaking OpenAI's streaming /v1/chat/completions (SSE chunks, usage chunk, errors)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fake_server import ThreadedServer


class FakeOpenAIServer(ThreadedServer):
    """OpenAI-compatible look-alike. Attributes may change between requests: `reply`, `delay_s` (before each
    chunk), `fail_status`, `drop_after` (chunks sent before the connection is cut, no [DONE]), `tool_call`
    ((name, JSON arguments): asked for when tools are offered and the last message is the user's; once a
    tool message comes back, the reply quotes its content)."""

    thread_name = "fake-openai"

    def __init__(
        self, *, api_key: str = "sk-fake", reply: str = "Paris is the capital of France. It is lovely."
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.reply = reply
        self.delay_s = 0.0
        self.fail_status: int | None = None
        self.drop_after: int | None = None
        self.tool_call: tuple[str, str] | None = None
        self.requests: list[dict[str, Any]] = []
        self.usage_sent: list[dict[str, int]] = []

    def routes(self) -> list[Route]:
        """Only chat completions."""
        return [Route("/v1/chat/completions", self._handle, methods=["POST"])]

    def pieces(self, reply: str | None = None) -> list[str]:
        """The reply as streamed: two words per chunk, each keeping its leading space."""
        words = (reply or self.reply).split(" ")
        return [(" " if i else "") + " ".join(words[i : i + 2]) for i in range(0, len(words), 2)]

    async def _handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.")
        body = await request.json()
        self.requests.append(body)
        if self.fail_status is not None:
            return _error(self.fail_status, "fake failure")
        last = body["messages"][-1]
        if self.tool_call is not None and body.get("tools") and last["role"] == "user":
            return StreamingResponse(
                self._tool_call_events(body, *self.tool_call), media_type="text/event-stream"
            )
        if last["role"] == "tool":
            return StreamingResponse(
                self._events(body, f"The tool said {last['content']}"), media_type="text/event-stream"
            )
        return StreamingResponse(self._events(body), media_type="text/event-stream")

    async def _tool_call_events(self, body: dict[str, Any], name: str, arguments: str) -> AsyncIterator[str]:
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body["model"],
        }
        half = len(arguments) // 2
        pieces = [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": arguments[:half]},
            },
            {"index": 0, "function": {"arguments": arguments[half:]}},
        ]
        for i, piece in enumerate(pieces):
            choice = {
                "index": 0,
                "delta": {"tool_calls": [piece]},
                "finish_reason": "tool_calls" if i else None,
            }
            yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
        yield "data: [DONE]\n\n"

    async def _events(self, body: dict[str, Any], reply: str | None = None) -> AsyncIterator[str]:
        reply = reply or self.reply
        pieces = self.pieces(reply)
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body["model"],
        }
        for i, piece in enumerate(pieces):
            if self.drop_after is not None and i >= self.drop_after:
                raise ConnectionResetError("fake server dropped the stream")  # uvicorn aborts the response
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            last = i == len(pieces) - 1
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if last else None}
            yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
            usage = {"prompt_tokens": prompt, "completion_tokens": len(reply.split()),
                     "total_tokens": prompt + len(reply.split())}  # fmt: skip
            self.usage_sent.append(usage)
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "fake_error", "code": code}}, status_code=code)
