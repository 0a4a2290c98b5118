"""The event parser: any split of the same text gives the same events."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from mlx_lm.tool_parsers import json_tools, mistral, pythonic, qwen3_coder

from mlxnb._engine.parser import EventParser, Markers
from mlxnb.events import ContentDelta, Event, ThinkingDelta, ToolCall, ToolCallDelta, ToolCallError

QWEN = Markers("<think>", "</think>", json_tools.tool_call_start, json_tools.tool_call_end)


def family(module: Any, think: tuple[str, str] = ("<think>", "</think>")) -> dict[str, Any]:
    markers = Markers(think[0], think[1], module.tool_call_start, module.tool_call_end or None)
    return {"markers": markers, "tool_parser": module.parse_tool_call}


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    reasoning: str = ""
    content: str = ""
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    errors: int = 0
    initial_state: str = "normal"
    stop: tuple[str, ...] = ()
    parser: dict[str, Any] = field(default_factory=lambda: family(json_tools))


CASES = [
    Case("plain", "Hello, world!", content="Hello, world!"),
    Case("thinking", "<think>\nstep 1\n</think>\n\nAnswer", reasoning="step 1\n", content="Answer"),
    Case(
        "implicit opener",
        "still thinking</think>Done",
        reasoning="still thinking",
        content="Done",
        initial_state="reasoning",
    ),
    Case("unclosed thinking at cut-off", "<think>never ends", reasoning="never ends"),
    Case("angle brackets are not markers", "a <b> < c </thin", content="a <b> < c </thin"),
    Case(
        "qwen3 tool call",
        '<think>\nuse a tool\n</think>\n\n<tool_call>\n{"name": "get_weather", '
        '"arguments": {"city": "Paris"}}\n</tool_call>',
        reasoning="use a tool\n",
        calls=(("get_weather", {"city": "Paris"}),),
    ),
    Case(
        "tool call inside thinking",
        '<think>hmm <tool_call>{"name": "f", "arguments": {}}</tool_call>',
        reasoning="hmm ",
        calls=(("f", {}),),
    ),
    Case(
        "two calls and content",
        'Sure.\n<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": {"y": [1, 2]}}</tool_call>',
        content="Sure.\n",
        calls=(("a", {"x": 1}), ("b", {"y": [1, 2]})),
    ),
    Case(
        "malformed call is an event", "<tool_call>{not json</tool_call>ok", content="ok", errors=1
    ),
    Case(
        "unterminated call at cut-off",
        '<tool_call>{"name": "f", "arguments": {"a": 1}}',
        calls=(("f", {"a": 1}),),
    ),
    Case("stop string", "one two STOP three", content="one two ", stop=("STOP",)),
    Case("stop string inside thinking", "<think>abcXYZdef", reasoning="abc", stop=("XYZ",)),
    Case(
        "qwen3-coder xml call",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call>",
        calls=(("get_weather", {"city": "Paris"}),),
        parser=family(qwen3_coder),
    ),
    Case(
        "pythonic call (LFM2 style)",
        'Let me check. <|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>',
        content="Let me check. ",
        calls=(("get_weather", {"city": "Paris"}),),
        parser=family(pythonic),
    ),
    Case(
        "mistral call runs to the end",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
        calls=(("get_weather", {"city": "Paris"}),),
        parser=family(mistral),
    ),
    Case(
        "longcat thinking markers",
        "<longcat_think>deep</longcat_think>shallow",
        reasoning="deep",
        content="shallow",
        parser=family(json_tools, ("<longcat_think>", "</longcat_think>")),
    ),
]


def run(case: Case, chunks: list[str]) -> list[Event]:
    ids = itertools.count()
    parser = EventParser(
        case.parser["markers"],
        tool_parser=case.parser["tool_parser"],
        initial_state=case.initial_state,
        stop=case.stop,
        id_factory=lambda: f"call_{next(ids)}",
    )
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events + parser.finish()


def merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, (ThinkingDelta, ContentDelta)) and type(last) is type(event):
            out[-1] = type(event)(last.text + event.text)  # type: ignore[union-attr]
        elif (
            isinstance(event, ToolCallDelta)
            and isinstance(last, ToolCallDelta)
            and last.index == event.index
        ):
            out[-1] = ToolCallDelta(event.index, last.text + event.text)
        else:
            out.append(event)
    return out


def splits(text: str) -> list[list[str]]:
    two_way = [[text[:i], text[i:]] for i in range(len(text) + 1)]
    return [*two_way, list(text), [text[i : i + 3] for i in range(0, len(text), 3)]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_whole_text_gives_expected_turn(case: Case) -> None:
    events = run(case, [case.text])
    reasoning = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls = tuple((e.name, e.arguments) for e in events if isinstance(e, ToolCall))
    assert (reasoning, content, calls) == (case.reasoning, case.content, case.calls)
    assert sum(isinstance(e, ToolCallError) for e in events) == case.errors


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_split_gives_the_same_events(case: Case) -> None:
    expected = merged(run(case, [case.text]))
    for chunks in splits(case.text):
        assert merged(run(case, chunks)) == expected, chunks


def test_markers_never_leak_into_text() -> None:
    text = '<think>a</think>b<tool_call>{"name": "f", "arguments": {}}</tool_call>c'
    for chunks in splits(text):
        events = run(Case("leak", text), chunks)
        shown = "".join(e.text for e in events if isinstance(e, (ThinkingDelta, ContentDelta)))
        assert "<" not in shown and ">" not in shown


def test_tool_call_delta_streams_raw_text_with_block_index() -> None:
    text = '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>bad</tool_call>'
    events = merged(run(Case("deltas", text), list(text)))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.text) for d in deltas] == [
        (0, '{"name": "a", "arguments": {}}'),
        (1, "bad"),
    ]
    error = next(e for e in events if isinstance(e, ToolCallError))
    assert error.index == 1 and error.raw == "bad" and error.message


def test_parser_without_tool_parser_reports_error_event() -> None:
    parser = EventParser(QWEN, tool_parser=None)
    events = parser.feed("<tool_call>{}</tool_call>") + parser.finish()
    assert [type(e) for e in events] == [ToolCallDelta, ToolCallError]


def test_text_after_stop_is_ignored() -> None:
    parser = EventParser(QWEN, stop=("END",))
    first = parser.feed("abcEN")
    second = parser.feed("Dxyz")
    assert parser.stopped
    assert merged(first + second + parser.feed("more") + parser.finish()) == [ContentDelta("abc")]


@pytest.mark.parametrize("split", range(1, 12))
def test_the_matched_stop_string_is_known_at_any_split(split: int) -> None:
    parser = EventParser(QWEN, stop=("STOP", "END", "ENDING"))
    text = "abc END more"
    events = parser.feed(text[:split]) + parser.feed(text[split:]) + parser.finish()
    assert parser.stop_sequence == "END"
    assert merged(events) == [ContentDelta("abc ")]


def test_no_stop_string_matched_leaves_none() -> None:
    parser = EventParser(QWEN, stop=("STOP",))
    parser.feed("plain text")
    parser.finish()
    assert parser.stop_sequence is None and not parser.stopped


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_chunks_without_marker_characters_give_the_state_machines_events(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that cannot begin a marker skips the state machine: the same events, unmerged."""
    fast = [run(case, chunks) for chunks in splits(case.text)]
    monkeypatch.setattr(EventParser, "_starts_no_marker", lambda *_: False)
    assert [run(case, chunks) for chunks in splits(case.text)] == fast
