"""A local HTTP server speaking Gemini's streamGenerateContent SSE wire format, for the real SDK."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fake_server import ThreadedServer

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL", 503: "UNAVAILABLE",
}  # fmt: skip
_SUFFIX = ":streamGenerateContent"


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One generate request as the server saw it."""

    path: str
    model: str
    body: dict[str, Any]


class FakeGeminiServer(ThreadedServer):
    """Gemini look-alike on 127.0.0.1 (uvicorn in a thread, so it serves sync and async callers alike).

    Attributes may be changed between requests: `reply`, `delay_s` (before each chunk), `fail_status`.
    """

    thread_name = "fake-gemini"

    def __init__(
        self,
        *,
        api_key: str = "fake-key",
        reply: str = "Paris is the capital of France. It is known for the Eiffel Tower.",
        words_per_chunk: int = 3,
        delay_s: float = 0.0,
        fail_status: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.reply = reply
        self.words_per_chunk = words_per_chunk
        self.delay_s = delay_s
        self.fail_status = fail_status
        self.drop_after: int | None = None
        """Chunks sent before the connection is cut mid-stream (None: never)."""
        self.tool_call: tuple[str, dict[str, Any]] | None = None
        """(name, args) of a function call to make when tools are offered and the user has just spoken."""
        self.requests: list[ReceivedRequest] = []
        self.stream_abandoned = threading.Event()
        """Set when a client went away before the last chunk (the server saw the connection close)."""
        super().__init__()

    def routes(self) -> list[Route]:
        """Every POST goes to the generate handler, which checks the method in the path."""
        return [Route("/{path:path}", self._handle, methods=["POST"])]

    def chunks(self, reply: str | None = None) -> list[str]:
        """The reply split as it will be streamed (each piece keeps its leading space)."""
        words = (reply or self.reply).split(" ")
        n = max(1, self.words_per_chunk)
        return [
            " ".join(words[i : i + n]) + (" " if i + n < len(words) else "") for i in range(0, len(words), n)
        ]

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        if not path.endswith(_SUFFIX) or "/models/" not in path:
            return _error(404, f"unknown method {path}")
        if request.headers.get("x-goog-api-key") != self.api_key:
            return _error(401, "API key not valid. Please pass a valid API key.")
        model = path.rsplit("/models/", 1)[1].removesuffix(_SUFFIX)
        body = await request.json()
        self.requests.append(ReceivedRequest(path=path, model=model, body=body))
        if self.fail_status is not None:
            return _error(self.fail_status, "fake failure")
        if request.query_params.get("alt") != "sse":
            return _error(400, "only alt=sse is implemented")
        last = body["contents"][-1]["parts"]
        if self.tool_call is not None and body.get("tools") and any("text" in part for part in last):
            return StreamingResponse(
                self._function_call(model, *self.tool_call), media_type="text/event-stream"
            )
        answers = [part["functionResponse"]["response"] for part in last if "functionResponse" in part]
        reply = f"The tool said {json.dumps(answers[0])}" if answers else None
        return StreamingResponse(self._events(model, reply), media_type="text/event-stream")

    async def _function_call(self, model: str, name: str, args: dict[str, Any]) -> AsyncIterator[str]:
        part = {"functionCall": {"name": name, "args": args}}
        candidate = {"content": {"parts": [part], "role": "model"}, "index": 0, "finishReason": "STOP"}
        yield f"data: {json.dumps({'candidates': [candidate], 'modelVersion': model})}\n\n"

    async def _events(self, model: str, reply: str | None = None) -> AsyncIterator[str]:
        pieces = self.chunks(reply)
        finished = False
        try:
            for i, chunk in enumerate(self._chunks(model, pieces)):
                if self.drop_after is not None and i >= self.drop_after:
                    raise ConnectionResetError(
                        "fake server dropped the stream"
                    )  # uvicorn aborts the response
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield chunk
            finished = True
        finally:
            if not finished:
                self.stream_abandoned.set()

    def _chunks(self, model: str, pieces: list[str]) -> Iterator[str]:
        for i, piece in enumerate(pieces):
            candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
            chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": "fake"}
            if i == len(pieces) - 1:
                candidate["finishReason"] = "STOP"
                words = len(self.reply.split())
                chunk["usageMetadata"] = {
                    "promptTokenCount": 8,
                    "candidatesTokenCount": words,
                    "totalTokenCount": 8 + words,
                }
            yield f"data: {json.dumps(chunk)}\n\n"


def _error(code: int, message: str) -> JSONResponse:
    status = _STATUS_NAMES.get(code, "UNKNOWN")
    return JSONResponse({"error": {"code": code, "message": message, "status": status}}, status_code=code)
