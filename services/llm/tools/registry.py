"""The connector interface and the registry that runs calls: arguments checked against the tool's JSON
schema, a timeout, and a failure turned into an error result for the model, never a hung turn."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from shared.metrics import TOOL_CALL_SECONDS, TOOL_CALLS

log = logging.getLogger(__name__)

ToolFunction = Callable[[dict[str, Any]], Awaitable[Any]]


class ToolError(Exception):
    """A tool could not answer; the message is shown to the model (no secrets, no stack traces)."""


@dataclass(frozen=True, slots=True)
class Tool:
    """One connector: a name and description the model sees, JSON-schema parameters, an async call."""

    name: str
    description: str
    parameters: dict[str, Any]
    call: ToolFunction
    timeout_s: float = 5.0


def string_parameters(required: bool = True, **descriptions: str) -> dict[str, Any]:
    """A JSON schema of string parameters, one per keyword (its description), all required or none."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: {"type": "string", "description": text} for name, text in descriptions.items()},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(descriptions)
    return schema


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What goes back into the context: the tool's output as JSON, or an error the model can explain."""

    name: str
    ok: bool
    content: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        """The result as the JSON text function-calling APIs expect."""
        return json.dumps(self.content, ensure_ascii=False, default=str)


class ToolRegistry:
    """The tools one deployment offers, looked up by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def __bool__(self) -> bool:
        return bool(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    @property
    def tools(self) -> list[Tool]:
        """Every registered tool, in registration order."""
        return list(self._tools.values())

    def openai_schemas(self) -> list[dict[str, Any]]:
        """The tools in OpenAI's chat-completions `tools` format."""
        return [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in self._tools.values()
        ]

    async def invoke(self, name: str, arguments: dict[str, Any] | str | None) -> ToolResult:
        """Run one call; every failure (unknown tool, bad arguments, error, timeout) is an error result."""
        tool = self._tools.get(name)
        if tool is None:
            return _failed(name, "unknown_tool", f"there is no tool named {name!r}")
        started = time.monotonic()
        outcome = "ok"
        try:
            args = _parse_arguments(arguments)
            jsonschema.validate(args, tool.parameters)
            async with asyncio.timeout(tool.timeout_s):
                value = await tool.call(args)
            return ToolResult(name, True, value if isinstance(value, dict) else {"result": value})
        except (ValueError, jsonschema.ValidationError) as exc:
            outcome = "bad_arguments"
            message = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
            return _failed(name, outcome, f"invalid arguments: {message}")
        except TimeoutError:
            outcome = "timeout"
            return _failed(name, outcome, f"{name} did not answer within {tool.timeout_s:g} s")
        except ToolError as exc:
            outcome = "error"
            return _failed(name, outcome, str(exc))
        except Exception:
            outcome = "error"
            log.exception("tool failed", extra={"tool": name})
            return _failed(name, outcome, f"{name} failed")
        finally:
            TOOL_CALLS.labels(tool=name if name in self._tools else "unknown", outcome=outcome).inc()
            TOOL_CALL_SECONDS.labels(tool=name if name in self._tools else "unknown").observe(
                time.monotonic() - started
            )


def _parse_arguments(arguments: dict[str, Any] | str | None) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not JSON: {exc.msg}") from exc
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be a JSON object")
    return arguments


def _failed(name: str, code: str, message: str) -> ToolResult:
    return ToolResult(name, False, {"error": {"code": code, "message": message}})
