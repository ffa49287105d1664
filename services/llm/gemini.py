"""Gemini through the official google-genai SDK, streamed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import httpx
from google import genai
from google.genai import errors, types

from services.llm.engine import ChatMessage, GenerationError, GenerationOptions, Usage, as_text_messages
from services.llm.tools.registry import ToolResult
from services.llm.tools.runner import ToolCall, ToolRunner

# Gemini names the assistant "model".
_ROLES = {"user": "user", "assistant": "model"}


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection/timeout errors of whichever HTTP backend (httpx or its fork httpx2) the SDK picked."""
    found: list[type[Exception]] = [httpx.HTTPError]
    try:
        import httpx2
    except ImportError:
        return tuple(found)
    return (*found, httpx2.HTTPError)


_TRANSPORT_ERRORS = _transport_errors()
# Model steps in one reply: a tool call and the answer that uses it, with room for a second call.
_MAX_STEPS = 4


class GeminiGenerator:
    """Generator backed by the Gemini API (or any server speaking its wire format at `base_url`)."""

    def __init__(
        self,
        api_key: str,
        model: str = "gemini-2.5-flash",
        *,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        tools: ToolRunner | None = None,
    ) -> None:
        self.name = f"gemini:{model}"
        self._tools = tools
        self._model = model
        self._api_key = api_key
        # The SDK's timeout is in milliseconds; without one a stalled stream would hang the turn.
        options = types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000))
        self._client = genai.Client(api_key=api_key, http_options=options)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        usage: Usage | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield text deltas of Gemini's reply; function calls are run and their results sent back within
        the same reply. SDK and transport failures become GenerationError. Each step's usage metadata goes
        into `usage` (thinking tokens count as output: they are billed as such)."""
        options = options or GenerationOptions()
        usage = usage if usage is not None else Usage()
        usage.model = options.model or self._model
        system, contents = _to_contents(as_text_messages(messages))
        # With a thinking model the cap includes thinking tokens: pair a small cap with a model that does not
        # think (e.g. gemini-2.5-flash-lite as the economy model).
        config = types.GenerateContentConfig(
            system_instruction=system, tools=self._declarations(), max_output_tokens=options.max_tokens
        )
        for _ in range(_MAX_STEPS):
            calls: list[types.FunctionCall] = []
            async for delta in self._step(usage.model, contents, config, calls, usage):
                yield delta
            if not calls or self._tools is None:
                return
            results: list[ToolResult] = []
            usage.tool_calls += len(calls)
            async for filler in self._tools.run(
                [ToolCall(c.name or "", c.args or {}, c.id or "") for c in calls], results
            ):
                yield filler
            usage.tool_failures += sum(not result.ok for result in results)
            contents.append(types.Content(role="model", parts=[types.Part(function_call=c) for c in calls]))
            contents.append(types.Content(role="user", parts=[
                types.Part(function_response=types.FunctionResponse(id=c.id, name=c.name, response=r.content))
                for c, r in zip(calls, results, strict=True)
            ]))  # fmt: skip
        raise GenerationError(f"gemini kept calling tools after {_MAX_STEPS} steps")

    def _declarations(self) -> list[types.Tool] | None:
        if self._tools is None or not self._tools.registry:
            return None
        declarations = [
            types.FunctionDeclaration(
                name=t.name, description=t.description, parameters_json_schema=t.parameters
            )
            for t in self._tools.registry.tools
        ]
        return [types.Tool(function_declarations=declarations)]

    async def _step(
        self,
        model: str,
        contents: list[types.Content],
        config: types.GenerateContentConfig,
        calls: list[types.FunctionCall],
        usage: Usage,
    ) -> AsyncGenerator[str, None]:
        """One request: yield its text, collect its function calls into `calls`, add its usage."""
        counted: types.GenerateContentResponseUsageMetadata | None = None
        try:
            response = await self._client.aio.models.generate_content_stream(
                model=model, contents=contents, config=config
            )
            try:
                async for chunk in response:
                    calls += chunk.function_calls or []
                    # Each chunk's metadata, when present, covers the response so far: the last one counts.
                    counted = chunk.usage_metadata or counted
                    if text := _text_of(chunk):
                        yield text
            finally:
                if counted is not None:
                    usage.add_tokens(
                        counted.prompt_token_count or 0,
                        (counted.candidates_token_count or 0) + (counted.thoughts_token_count or 0),
                    )
                # Closing releases the HTTP stream now rather than at garbage collection.
                if isinstance(response, AsyncGenerator):
                    await response.aclose()
        except errors.APIError as exc:
            raise GenerationError(
                self._redact(f"gemini error {exc.code} {exc.status}: {exc.message}")
            ) from exc
        except _TRANSPORT_ERRORS as exc:
            raise GenerationError(
                self._redact(f"gemini transport error: {type(exc).__name__}: {exc}")
            ) from exc

    async def aclose(self) -> None:
        """Release the SDK's HTTP connections (and the tools')."""
        await self._client.aio.aclose()
        if self._tools is not None:
            await self._tools.aclose()

    def _redact(self, text: str) -> str:
        # Servers and proxies sometimes echo the request; the key must never reach logs.
        return text.replace(self._api_key, "***") if self._api_key else text


def _to_contents(messages: Sequence[ChatMessage]) -> tuple[str | None, list[types.Content]]:
    """Split system messages (→ system_instruction) from the user/model history."""
    system = [m.text for m in messages if m.role == "system"]
    contents = [
        types.Content(role=_ROLES[m.role], parts=[types.Part(text=m.text)])
        for m in messages
        if m.role != "system"
    ]
    return ("\n\n".join(system) or None), contents


def _text_of(chunk: types.GenerateContentResponse) -> str:
    """The chunk's text parts (chunk.text would warn about the function-call parts next to them)."""
    if not chunk.candidates or chunk.candidates[0].content is None:
        return ""
    return "".join(p.text for p in chunk.candidates[0].content.parts or [] if p.text and not p.thought)
