"""``tool_choice`` and ``parallel_tool_calls``: the tools a template sees, the grammar calls follow.

``"auto"`` leaves the model free, ``"none"`` hides the tools, and ``"required"`` or a named
function makes the answer tool calls: an llguidance grammar (run by the structured-output
processor, so reasoning stays free before it) that allows only calls in the model's own format,
with arguments matching the tool's JSON schema. ``parallel_tool_calls=False`` allows at most one
call: the grammar ends after it. Only formats that write JSON between markers
(``<tool_call>{"name": …, "arguments": {…}}</tool_call>``: mlx-lm's ``json_tools`` parser, Qwen
and Hermes) can be constrained; a model with another format refuses rather than ignore the option.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlxnb._engine.structured import compile_lark, marker_token
from mlxnb.errors import InvalidRequestError

ToolChoice = str | Mapping[str, Any]
"""``"auto"``, ``"none"``, ``"required"``, ``{"name": "fn"}`` or OpenAI's
``{"type": "function", "function": {"name": "fn"}}``."""

JSON_CALL_PARSERS = frozenset({"json_tools"})
"""mlx-lm tool parsers whose calls are one JSON object ``{"name", "arguments"}`` between markers."""

_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Separators as chat templates render JSON (Jinja's tojson), so forced calls look like the
# calls the model was trained on; no free whitespace, so a call cannot drift into blank space.


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tool options come to.

    Attributes:
        tools: The tools the chat template sees (``None``: none).
        grammar: A compiled llguidance grammar the answer must follow, else ``None``.
    """

    tools: list[Mapping[str, Any]] | None
    grammar: str | None = None


def plan_tools(
    tools: Sequence[Mapping[str, Any]] | None,
    choice: ToolChoice | None,
    parallel_tool_calls: bool,
    tokenizer: Any,
    *,
    has_json_schema: bool = False,
) -> ToolPlan:
    """Check a request's ``tool_choice`` and ``parallel_tool_calls`` and plan them.

    Args:
        tools: The request's OpenAI-style tool definitions.
        choice: ``tool_choice`` (``None`` means ``"auto"``).
        parallel_tool_calls: ``False``: at most one call.
        tokenizer: The model's mlx-lm ``TokenizerWrapper`` (its tool-call markers and parser).
        has_json_schema: The request also asks for a JSON-schema answer.

    Returns:
        The tools for the template and the grammar, if any.

    Raises:
        InvalidRequestError: An unknown choice; ``"required"`` without tools; a named function
            that is not among the tools; a forced call together with a JSON schema; or a forced
            or single call on a model whose tool-call format cannot be constrained.
    """
    listed = list(tools) if tools else None
    name = check_tool_choice(tools, choice)
    if choice == "none":
        return ToolPlan(None)
    by_name = {_function(tool)["name"]: tool for tool in listed or []}
    forced = name is not None or choice == "required"
    if forced and has_json_schema:
        raise InvalidRequestError(
            "tool_choice forces a tool call and json_schema a JSON answer: ask for one of them"
        )
    if not listed or (not forced and (parallel_tool_calls or has_json_schema)):
        # A JSON-schema grammar already leaves no room for a call.
        return ToolPlan(listed)
    what = f"tool_choice={choice!r}" if forced else "parallel_tool_calls=False"
    markers = _markers(tokenizer, what)
    offered = [by_name[name]] if name is not None else listed
    calls = _calls_rule(offered, markers)
    if forced:
        more = "(SEP? call)*" if parallel_tool_calls else ""
        lark = f"start: LEAD? call {more}\nSEP: /\\n/\nLEAD: /\\n\\n?/\n{calls}"
    else:
        # Free text (which cannot spell the opener), then at most one call, then the end.
        text = f"TEXT: /(?s:.+)/ & ~/(?s:.*{_regex_literal(markers.start_text)}.*)/"
        lark = f"start: TEXT? call?\n{text}\n{calls}"
    return ToolPlan(listed, compile_lark(lark, f"{what}: cannot build the tool-call grammar"))


def check_tool_choice(
    tools: Sequence[Mapping[str, Any]] | None, choice: ToolChoice | None
) -> str | None:
    """Check ``tool_choice`` against the tools; return the function it names, if it names one.

    Raises:
        InvalidRequestError: An unknown choice, ``"required"`` without tools, or a named
            function that is not among the tools.
    """
    name = _chosen_name(choice)
    if choice == "required" and not tools:
        raise InvalidRequestError("tool_choice='required' needs at least one tool in tools")
    known = [_function(tool)["name"] for tool in tools or []]
    if name is not None and name not in known:
        listed = ", ".join(repr(n) for n in known) or "none"
        raise InvalidRequestError(
            f"tool_choice names the function {name!r}, which is not in tools (tools: {listed})"
        )
    return name


def _chosen_name(choice: ToolChoice | None) -> str | None:
    if choice is None or choice in ("auto", "none", "required"):
        return None
    if isinstance(choice, Mapping):
        inner = choice.get("function") if choice.get("type") == "function" else choice
        name = inner.get("name") if isinstance(inner, Mapping) else None
        if isinstance(name, str) and name:
            return name
    raise InvalidRequestError(
        "tool_choice must be 'auto', 'none', 'required', {'name': ...} or "
        f"{{'type': 'function', 'function': {{'name': ...}}}}, not {choice!r}"
    )


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = tool.get("function", tool)
    if not isinstance(inner, Mapping) or not isinstance(inner.get("name"), str):
        raise InvalidRequestError(f"a tool needs a function with a string name, got {tool!r}")
    return inner


@dataclass(frozen=True)
class _Markers:
    start: str  # the opener as a grammar item: a token reference or a string literal
    end: str
    start_text: str


def _markers(tokenizer: Any, what: str) -> _Markers:
    parser = getattr(tokenizer, "tool_parser", None)
    module = str(getattr(parser, "__module__", "")).rsplit(".", 1)[-1]
    has_calls = bool(getattr(tokenizer, "has_tool_calling", False)) and parser is not None
    if not has_calls or module not in JSON_CALL_PARSERS or not tokenizer.tool_call_end:
        found = f"its format is mlx-lm's {module!r}" if has_calls else "it has no tool-call format"
        raise InvalidRequestError(
            f"{what} is not supported for this model: {found}, and only JSON calls between "
            "markers (<tool_call>{...}</tool_call>, as Qwen and Hermes write them) can be enforced"
        )
    start_text, end_text = str(tokenizer.tool_call_start), str(tokenizer.tool_call_end)
    return _Markers(
        _item(start_text, marker_token(tokenizer, "tool_call_start")),
        _item(end_text, marker_token(tokenizer, "tool_call_end")),
        start_text,
    )


def _item(text: str, token: int | None) -> str:
    # A marker that is one (often special) token must be that token: llguidance never spells a
    # special token out of text.
    return f"<[{token}]>" if token is not None else json.dumps(text)


def _calls_rule(tools: Sequence[Mapping[str, Any]], markers: _Markers) -> str:
    """``call``: one call of any of ``tools``, its arguments held to that tool's schema."""
    lines = [f'call: {markers.start} "\\n" body "\\n" {markers.end}']
    bodies = []
    for index, tool in enumerate(tools):
        function = _function(tool)
        parameters = function.get("parameters") or {"type": "object"}
        if not isinstance(parameters, Mapping):
            problem = "parameters must be a JSON schema"
            raise InvalidRequestError(f"tool {function['name']!r}: {problem}")
        head = '{"name": ' + json.dumps(function["name"], ensure_ascii=False) + ', "arguments": '
        schema = {**parameters, "x-guidance": _JSON_OPTIONS}
        lines.append(f'body{index}: {json.dumps(head)} args{index} "}}"')
        lines.append(f"args{index}: %json {json.dumps(schema)}")
        bodies.append(f"body{index}")
    lines.insert(1, f"body: {' | '.join(bodies)}")
    return "\n".join(lines)


def _regex_literal(text: str) -> str:
    """``text`` as a regex matching it literally (hex escapes: safe inside ``/…/``)."""
    return "".join(f"\\x{{{ord(c):x}}}" for c in text)
