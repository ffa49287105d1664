"""Arithmetic the model should not do in its head: an expression evaluated over Python's AST with only
numbers, + - * / // % **, unary signs, parentheses and a few math functions (never `eval`)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from services.llm.tools.registry import Tool, ToolError, string_parameters

_MAX_EXPRESSION = 200
_MAX_EXPONENT = 100
_MAX_MAGNITUDE = 1e100

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}  # fmt: skip
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt, "abs": abs, "round": round, "log": math.log, "log10": math.log10, "exp": math.exp,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil,
}  # fmt: skip
_CONSTANTS = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression; ToolError for anything else or anything too big."""
    if len(expression) > _MAX_EXPRESSION:
        raise ToolError(f"expression longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval")
        value = _value(tree.body)
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from exc
    except (ArithmeticError, ValueError) as exc:
        raise ToolError(f"cannot compute: {exc}") from exc
    if abs(value) > _MAX_MAGNITUDE:
        raise ToolError("result too large")
    return value


def _value(node: ast.AST) -> float:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ToolError(f"exponent larger than {_MAX_EXPONENT}")
        result = _BINARY[type(node.op)](left, right)
        if abs(result) > _MAX_MAGNITUDE:
            raise ToolError("result too large")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
        and not node.keywords and len(node.args) <= 2
    ):  # fmt: skip
        return float(_FUNCTIONS[node.func.id](*(_value(arg) for arg in node.args)))
    raise ToolError(f"not allowed in a calculation: {ast.unparse(node)[:40]}")


async def _calculate(args: dict[str, Any]) -> dict[str, Any]:
    value = evaluate(str(args["expression"]))
    shown = int(value) if float(value).is_integer() else round(value, 10)
    return {"expression": args["expression"], "result": shown}


def calculator_tool() -> Tool:
    """The calculator as a tool."""
    return Tool(
        name="calculate",
        description="Evaluate an arithmetic expression exactly, e.g. '17.5 * 3 / 4' or 'sqrt(2)'.",
        parameters=string_parameters(expression="the expression"),
        call=_calculate,
        timeout_s=1.0,
    )
