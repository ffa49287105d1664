"""Gemini through the official google-genai SDK, streamed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import httpx
from google import genai
from google.genai import errors, types

from services.llm.engine import ChatMessage, GenerationError

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


class GeminiGenerator:
    """Generator backed by the Gemini API (or any server speaking its wire format at `base_url`)."""

    def __init__(
        self,
        api_key: str,
        model: str = "gemini-2.5-flash",
        *,
        base_url: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.name = f"gemini:{model}"
        self._model = model
        self._api_key = api_key
        # The SDK's timeout is in milliseconds; without one a stalled stream would hang the turn.
        options = types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000))
        self._client = genai.Client(api_key=api_key, http_options=options)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        """Yield text deltas of Gemini's reply; SDK and transport failures become GenerationError."""
        system, contents = _to_contents(messages)
        config = types.GenerateContentConfig(system_instruction=system) if system else None
        try:
            response = await self._client.aio.models.generate_content_stream(
                model=self._model, contents=contents, config=config
            )
            try:
                async for chunk in response:
                    if chunk.text:
                        yield chunk.text
            finally:
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
        """Release the SDK's HTTP connections."""
        await self._client.aio.aclose()

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
