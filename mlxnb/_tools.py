"""Python functions as tools: JSON schemas from signatures and docstrings, and safe execution.

A tool is any Python function (``def`` or ``async def``). Its name, the first part of its
Google-style docstring and the ``Args:`` section describe it to the model; its type hints give
the JSON schema of its arguments. :func:`tool` is optional and only overrides the name or the
description. :func:`execute_tool` never raises for a failing tool: the error becomes the result
the model sees, and the conversation goes on. A plain ``def`` runs in a thread of its own
(:mod:`mlxnb._tool_run`), so a slow one never holds up the kernel's loop or Stop.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from mlxnb._tool_run import result_value_text, run_function
from mlxnb.errors import InvalidRequestError, ToolError, WrongTypeError
from mlxnb.events import ToolCall

F = TypeVar("F", bound=Callable[..., Any])

_SPEC_ATTR = "__mlxnb_tool__"
_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns?|Yields?|"
    r"Raises|Examples?|Notes?|Attributes|See Also|Warnings?|Todo|References?)\s*:\s*$"
)
_ARG_LINE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAYS = {list, tuple, set, frozenset}


@dataclass(frozen=True)
class Tool:
    """A Python function described to the model.

    Attributes:
        name: The name the model calls.
        description: What the tool does (from the docstring unless given).
        parameters: JSON schema of the arguments (an ``object`` schema).
        function: The function that runs when the model calls the tool.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]

    def schema(self) -> dict[str, Any]:
        """The tool in OpenAI's ``tools=[...]`` shape."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call, as fed back to the model.

    Attributes:
        call_id: The :class:`~mlxnb.events.ToolCall`'s id.
        name: The tool's name.
        arguments: The arguments it was called with.
        content: The result as text (JSON for non-string results); empty on error.
        error: ``"ExceptionType: message"`` when the call failed (or was denied).
        seconds: How long the call took.
        stdout: What the tool printed while it ran (shown in its pane, not sent to the model).
        display: How its pane shows the returned value: ``{"table": {...}}`` for a DataFrame
            (the first rows and columns), ``{"image": "data:image/png;base64,…"}`` for a
            matplotlib figure; ``None`` for anything else.
    """

    call_id: str
    name: str
    arguments: dict[str, Any]
    content: str
    error: str | None = None
    seconds: float = 0.0
    stdout: str = ""
    display: Mapping[str, Any] | None = None
    type: Literal["tool_result"] = field(default="tool_result", init=False)

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.error is None

    def raise_for_error(self) -> ToolResult:
        """Raise :class:`~mlxnb.ToolError` if the call failed; else return the result.

        For code that runs tool calls itself and wants failures as exceptions (the chat loop
        feeds them back to the model instead).

        Raises:
            ToolError: The tool was unknown, got bad arguments, or raised.
        """
        if self.error is not None:
            raise ToolError(f"tool {self.name!r} (call {self.call_id}) failed: {self.error}")
        return self

    def to_message(self) -> dict[str, Any]:
        """The OpenAI-style ``tool`` message for the next request."""
        content = self.content if self.error is None else f"Error: {self.error}"
        return {"role": "tool", "tool_call_id": self.call_id, "name": self.name, "content": content}


@overload
def tool(function: F, /) -> F: ...
@overload
def tool(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]: ...
def tool(
    function: F | None = None, /, *, name: str | None = None, description: str | None = None
) -> F | Callable[[F], F]:
    """Mark a function as a tool, optionally overriding its name or description.

    Plain functions work as tools without it; the function is returned unchanged (only an
    attribute is added), so it can still be called and tested as usual.

    Args:
        function: The function (when used as ``@tool`` without parentheses).
        name: The name the model sees (default: the function's ``__name__``).
        description: The description (default: the docstring's summary).

    Returns:
        The function, or a decorator when called with keyword arguments only.
    """

    def mark(fn: F) -> F:
        setattr(fn, _SPEC_ATTR, build_tool(fn, name=name, description=description))
        return fn

    return mark(function) if function is not None else mark


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """Turn a :class:`Tool` or a function (``@tool``-marked or plain) into a :class:`Tool`."""
    if isinstance(obj, Tool):
        return obj
    spec = getattr(obj, _SPEC_ATTR, None)
    if isinstance(spec, Tool):
        return spec
    if not callable(obj):
        raise WrongTypeError(f"a tool must be a function, not {type(obj).__name__}")
    return build_tool(obj)


def as_tools(objs: Iterable[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    """Tools by name; duplicate names are an error."""
    tools: dict[str, Tool] = {}
    for obj in objs:
        spec = as_tool(obj)
        if spec.name in tools:
            raise InvalidRequestError(f"two tools are named {spec.name!r}")
        tools[spec.name] = spec
    return tools


def build_tool(
    function: Callable[..., Any], *, name: str | None = None, description: str | None = None
) -> Tool:
    """Describe ``function`` from its signature, type hints and Google-style docstring.

    Args:
        function: Any callable with an inspectable signature.
        name: Overrides the function's name.
        description: Overrides the docstring's summary.

    Returns:
        The :class:`Tool`.
    """
    summary, arg_docs = parse_docstring(inspect.getdoc(function) or "")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = dict(getattr(function, "__annotations__", {}))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name == "self":
            continue
        if param.name in hints:
            schema = type_schema(hints[param.name])
        elif param.default is not param.empty and param.default is not None:
            schema = type_schema(type(param.default))
        else:
            schema = {"type": "string"}
        if param.name in arg_docs and "description" not in schema:
            schema["description"] = arg_docs[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif _is_jsonable(param.default):
            schema["default"] = param.default
        properties[param.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    tool_name = name or getattr(function, "__name__", None) or type(function).__name__
    return Tool(tool_name, description or summary, parameters, function)


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and its ``Args:`` descriptions.

    Args:
        doc: The cleaned docstring (``inspect.getdoc``).

    Returns:
        ``(summary, {argument: description})``; the summary is the text before the first
        section, paragraphs joined.
    """
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    base_indent: int | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        header = _SECTION.match(stripped)
        if header and len(line) - len(line.lstrip()) == 0:
            section, current, base_indent = header.group(1).lower(), None, None
            continue
        if section is None:
            summary.append(stripped)
            continue
        if section not in ("args", "arguments", "parameters", "params") or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if base_indent is None:
            base_indent = indent
        match = _ARG_LINE.match(stripped)
        if indent <= base_indent and match:
            current = match.group(1)
            args[current] = match.group(2).strip()
        elif current is not None:
            args[current] = f"{args[current]} {stripped}".strip()
    blocks = re.split(r"\n\s*\n", "\n".join(summary).strip())
    return "\n\n".join(" ".join(block.split()) for block in blocks if block.strip()), args


def type_schema(annotation: Any) -> dict[str, Any]:
    """JSON schema for a type hint (scalars, containers, ``Literal``, enums, unions, dataclasses).

    Args:
        annotation: A type hint; ``Annotated[T, "text"]`` adds a description.

    Returns:
        A JSON schema dictionary (unknown types become ``{"type": "string"}``).
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    schema: dict[str, Any]
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if origin is Literal:
        return _enum_schema(list(args))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_schema([member.value for member in annotation])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return type_schema(options[0])
        return {"anyOf": [type_schema(a) for a in options]}
    container = origin or annotation
    if container in _ARRAYS or _is_abc(container, "Sequence", "Iterable", "Set"):
        schema = {"type": "array"}
        if container is tuple and args and args[-1] is not Ellipsis:
            schema["prefixItems"] = [type_schema(a) for a in args]
            schema["minItems"] = schema["maxItems"] = len(args)
        elif args:
            schema["items"] = type_schema(args[0])
        return schema
    if container is dict or _is_abc(container, "Mapping"):
        if len(args) == 2:
            return {"type": "object", "additionalProperties": type_schema(args[1])}
        return {"type": "object"}
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return build_tool(annotation).parameters
    return {"type": "string"}


def _is_abc(container: Any, *names: str) -> bool:
    import collections.abc as abc

    return any(container is getattr(abc, name) for name in names)


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_SCALARS.get(type(v)) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    return schema


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def result_text(value: Any) -> str:
    """A tool's return value as the text the model reads (JSON for non-strings)."""
    if isinstance(value, str):
        return value
    special = result_value_text(value)
    if special is not None:
        return special
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


async def execute_tool(tools: Mapping[str, Tool], call: ToolCall) -> ToolResult:
    """Run one tool call in the kernel; failures become an error result, never an exception.

    ``async def`` tools are awaited on the running loop; plain functions run in a thread of
    their own, so cancelling the caller (Stop) returns at once and a late result is dropped.
    What the tool prints is captured, and a DataFrame or a figure gets a ``display``.

    Args:
        tools: The available tools by name.
        call: The parsed call from the model.

    Returns:
        The :class:`ToolResult` (``error`` set for an unknown tool, bad arguments or a raise).
    """
    start = time.perf_counter()
    spec = tools.get(call.name)

    def failed(error: str) -> ToolResult:
        seconds = time.perf_counter() - start
        return ToolResult(call.id, call.name, dict(call.arguments), "", error, seconds)

    if spec is None:
        known = ", ".join(sorted(tools)) or "none"
        return failed(f"UnknownTool: no tool named {call.name!r} (available: {known})")
    try:
        inspect.signature(spec.function).bind(**call.arguments)
    except TypeError as exc:
        return failed(f"InvalidArguments: {exc}")
    try:
        outcome = await run_function(spec.function, call.arguments)
        text = result_text(outcome.value)
    except Exception as exc:
        return failed(f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    arguments = dict(call.arguments)
    return ToolResult(
        call.id, call.name, arguments, text, None, seconds, outcome.stdout, outcome.display
    )
