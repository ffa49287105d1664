"""Tools: the registry never lets a call hang or raise, the calculator evaluates arithmetic only."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.llm.tools.calculator import calculator_tool, evaluate
from services.llm.tools.clock import clock_tool
from services.llm.tools.registry import Tool, ToolError, ToolRegistry

pytestmark = pytest.mark.unit

ECHO_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def _tool(call: Any, timeout_s: float = 1.0) -> Tool:
    return Tool("echo", "Echo.", ECHO_SCHEMA, call, timeout_s)


async def _echo(args: dict[str, Any]) -> dict[str, Any]:
    return {"echo": args["text"]}


async def test_a_call_returns_the_tools_output() -> None:
    result = await ToolRegistry([_tool(_echo)]).invoke("echo", '{"text": "hi"}')
    assert result.ok and result.content == {"echo": "hi"} and result.as_json() == '{"echo": "hi"}'


@pytest.mark.parametrize(
    ("name", "arguments", "code"),
    [
        ("nope", {}, "unknown_tool"),
        ("echo", "{not json", "bad_arguments"),
        ("echo", "[1, 2]", "bad_arguments"),
        ("echo", {}, "bad_arguments"),
        ("echo", {"text": 5}, "bad_arguments"),
    ],
)
async def test_bad_calls_are_error_results(name: str, arguments: Any, code: str) -> None:
    result = await ToolRegistry([_tool(_echo)]).invoke(name, arguments)
    assert not result.ok and result.content["error"]["code"] == code


async def test_a_slow_tool_times_out_with_an_error_result() -> None:
    async def slow(args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    async with asyncio.timeout(2):
        result = await ToolRegistry([_tool(slow, timeout_s=0.1)]).invoke("echo", {"text": "x"})
    assert not result.ok and result.content["error"]["code"] == "timeout"


async def test_a_failing_tool_is_an_error_result_without_its_internals() -> None:
    async def broken(args: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("secret internals at /srv/x")

    async def refusing(args: dict[str, Any]) -> dict[str, Any]:
        raise ToolError("no such city")

    registry = ToolRegistry([_tool(broken), Tool("refuse", "r", ECHO_SCHEMA, refusing)])
    crashed = await registry.invoke("echo", {"text": "x"})
    assert not crashed.ok and "secret" not in crashed.as_json()
    refused = await registry.invoke("refuse", {"text": "x"})
    assert refused.content["error"] == {"code": "error", "message": "no such city"}


def test_schemas_are_in_openai_function_format() -> None:
    [schema] = ToolRegistry([calculator_tool()]).openai_schemas()
    assert schema["type"] == "function" and schema["function"]["name"] == "calculate"
    assert schema["function"]["parameters"]["required"] == ["expression"]


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("17.5 * 3 / 4", 13.125), ("2 ^ 10", 1024), ("-3 ** 2", -9),
     ("sqrt(16) + abs(-2)", 6), ("10 // 3 + 10 % 3", 4), ("round(pi, 2)", 3.14), ("7 × 6 ÷ 2", 21)],
)  # fmt: skip
def test_the_calculator_computes(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('id')", "(1).__class__", "open('/etc/passwd')", "[1, 2]", "x + 1", "'a' * 3",
     "9 ** 9 ** 9", "10 ** 200", "1 / 0", "lambda: 1", "sqrt(-1)", "1" * 300, "True + 1"],
)  # fmt: skip
def test_the_calculator_refuses_anything_else(expression: str) -> None:
    with pytest.raises(ToolError):
        evaluate(expression)


async def test_the_calculator_tool_answers_and_reports_refusals() -> None:
    registry = ToolRegistry([calculator_tool()])
    assert (await registry.invoke("calculate", {"expression": "6 * 7"})).content["result"] == 42
    refused = await registry.invoke("calculate", {"expression": "__import__('os')"})
    assert not refused.ok and "not allowed" in refused.content["error"]["message"]


async def test_the_clock_speaks_the_users_zone_or_the_one_asked() -> None:
    fixed = datetime(2026, 11, 26, 15, 4, tzinfo=ZoneInfo("UTC"))
    registry = ToolRegistry([clock_tool("Europe/Paris", now=lambda zone: fixed.astimezone(zone))])
    paris = (await registry.invoke("current_time", {})).content
    assert paris["time"] == "4:04 PM" and paris["date"] == "Thursday, November 26, 2026"
    tokyo = (await registry.invoke("current_time", {"time_zone": "Asia/Tokyo"})).content
    assert tokyo["time"] == "12:04 AM" and tokyo["date"].startswith("Friday")
    unknown = await registry.invoke("current_time", {"time_zone": "Mars/Olympus"})
    assert not unknown.ok
