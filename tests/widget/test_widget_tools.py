from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pytest

from mlxnb._tools import (
    Tool,
    ToolResult,
    as_tool,
    as_tools,
    build_tool,
    execute_tool,
    parse_docstring,
    result_text,
    tool,
    type_schema,
)
from mlxnb.events import ToolCall


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: float
    y: float = 0.0


class Opaque:
    pass


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (Any, {}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (list, {"type": "array"}),
        (set[str], {"type": "array", "items": {"type": "string"}}),
        (Sequence[str], {"type": "array", "items": {"type": "string"}}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (Mapping[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict, {"type": "object"}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, "x"], {"enum": [1, "x"]}),
        (Color, {"type": "string", "enum": ["red", "blue"]}),
        (int | None, {"type": "integer"}),
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (Annotated[int, "How many."], {"type": "integer", "description": "How many."}),
        (
            Point,
            {
                "type": "object",
                "properties": {
                    "x": {"type": "number"},
                    "y": {"type": "number", "default": 0.0},
                },
                "required": ["x"],
            },
        ),
        (Opaque, {"type": "string"}),
    ],
)
def test_type_schema(hint: Any, schema: dict[str, Any]) -> None:
    assert type_schema(hint) == schema


def get_weather(city: str, unit: Literal["C", "F"] = "C", days: int = 1) -> dict[str, Any]:
    """Get the weather forecast for a city.

    Uses the (pretend) national weather service,
    and caches nothing.

    Args:
        city: The city's name, e.g.
            "Paris" or "Tokyo".
        unit (str): Temperature unit.
        days: How many days ahead.

    Returns:
        unit: not an argument, must not leak into the schema.

    Raises:
        ValueError: never.
    """
    return {"city": city, "unit": unit, "days": days, "sky": "sunny"}


def test_build_tool_reads_signature_and_docstring() -> None:
    spec = as_tool(get_weather)
    assert spec.name == "get_weather"
    assert spec.description == (
        "Get the weather forecast for a city.\n\n"
        "Uses the (pretend) national weather service, and caches nothing."
    )
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": 'The city\'s name, e.g. "Paris" or "Tokyo".'},
            "unit": {
                "type": "string",
                "enum": ["C", "F"],
                "description": "Temperature unit.",
                "default": "C",
            },
            "days": {"type": "integer", "description": "How many days ahead.", "default": 1},
        },
        "required": ["city"],
    }
    assert spec.schema() == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def test_parameters_without_hints_and_variadics() -> None:
    def f(a, b=3, c=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        return a

    assert build_tool(f).parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "integer", "default": 3},
            "c": {"type": "string", "default": None},
        },
        "required": ["a"],
    }


def test_methods_and_annotated_descriptions() -> None:
    class Store:
        def lookup(self, key: Annotated[str, "The key."]) -> str:
            """Look a key up."""
            return key.upper()

    spec = as_tool(Store().lookup)
    assert spec.parameters == {
        "type": "object",
        "properties": {"key": {"type": "string", "description": "The key."}},
        "required": ["key"],
    }
    assert spec.description == "Look a key up."


def test_decorator_keeps_the_function_and_overrides() -> None:
    @tool
    def plain(x: int) -> int:
        """Double it."""
        return x * 2

    @tool(name="weather_now", description="Current weather.")
    def renamed(city: str) -> str:
        return city

    assert plain(2) == 4
    assert renamed("Oslo") == "Oslo"
    assert as_tool(plain).description == "Double it."
    assert (as_tool(renamed).name, as_tool(renamed).description) == (
        "weather_now",
        "Current weather.",
    )
    assert as_tool(as_tool(plain)) is as_tool(plain)


def test_as_tools_rejects_duplicates_and_non_callables() -> None:
    with pytest.raises(ValueError, match="two tools are named 'get_weather'"):
        as_tools([get_weather, get_weather])
    with pytest.raises(TypeError, match="must be a function"):
        as_tool(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("doc", "summary", "args"),
    [
        ("", "", {}),
        ("One line.", "One line.", {}),
        (
            "Sum.\n\nArgs:\n    a: First.\n    b: Second\n        line.",
            "Sum.",
            {"a": "First.", "b": "Second line."},
        ),
        (
            "Sum.\n\nArguments:\n    *args: Values.\n    **kw (dict): Options.",
            "Sum.",
            {"args": "Values.", "kw": "Options."},
        ),
        ("Sum.\n\nReturns:\n    x: no.\n\nArgs:\n    a: yes.", "Sum.", {"a": "yes."}),
    ],
)
def test_parse_docstring(doc: str, summary: str, args: dict[str, str]) -> None:
    assert parse_docstring(doc) == (summary, args)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        ({"a": 1, "é": [1.5, None]}, '{"a": 1, "é": [1.5, null]}'),
        (Point(1.0), '{"x": 1.0, "y": 0.0}'),
        (frozenset({1}), '"frozenset({1})"'),
        (None, "null"),
    ],
)
def test_result_text(value: Any, text: str) -> None:
    assert result_text(value) == text


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(index=0, id="call_1", name=name, arguments=arguments)


def boom(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"no weather for {reason}")


async def slow_double(x: int) -> int:
    """Doubles, later."""
    await asyncio.sleep(0)
    return x * 2


TOOLS = as_tools([get_weather, boom, slow_double])


@pytest.mark.parametrize(
    ("tool_call", "content", "error"),
    [
        (
            call("get_weather", city="Paris"),
            '{"city": "Paris", "unit": "C", "days": 1, "sky": "sunny"}',
            None,
        ),
        (call("slow_double", x=21), "42", None),
        (call("boom", reason="Mars"), "", "ValueError: no weather for Mars"),
        (
            call("nope"),
            "",
            "UnknownTool: no tool named 'nope' (available: boom, get_weather, slow_double)",
        ),
        (call("get_weather"), "", "InvalidArguments: missing a required argument: 'city'"),
        (
            call("get_weather", city="x", colour="red"),
            "",
            "InvalidArguments: got an unexpected keyword argument 'colour'",
        ),
    ],
)
async def test_execute_tool(tool_call: ToolCall, content: str, error: str | None) -> None:
    result = await execute_tool(TOOLS, tool_call)
    assert (result.content, result.error, result.ok) == (content, error, error is None)
    assert (result.call_id, result.name) == ("call_1", tool_call.name)
    assert result.arguments == tool_call.arguments
    assert result.seconds >= 0


async def test_cancelling_an_async_tool_propagates() -> None:
    started = asyncio.Event()

    async def forever() -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    task = asyncio.get_running_loop().create_task(
        execute_tool(as_tools([forever]), call("forever"))
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("result", "content"),
    [
        (ToolResult("c1", "f", {}, "42"), "42"),
        (ToolResult("c1", "f", {}, "", "ValueError: x"), "Error: ValueError: x"),
    ],
)
def test_tool_result_message(result: ToolResult, content: str) -> None:
    assert result.to_message() == {
        "role": "tool",
        "tool_call_id": "c1",
        "name": "f",
        "content": content,
    }


def test_tool_is_a_frozen_value() -> None:
    spec = as_tool(get_weather)
    assert isinstance(spec, Tool)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
