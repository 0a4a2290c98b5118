from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mlxnb._chat import RoundStart
from mlxnb._tools import ToolResult
from mlxnb._widget.protocol import Batcher, Op, OpRecorder, apply_op
from mlxnb.events import (
    ContentDelta,
    Done,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallError,
    Usage,
)

FIXTURE = Path(__file__).parents[2] / "widgets" / "tests" / "fixtures" / "protocol.json"
CASES = json.loads(FIXTURE.read_text())["cases"]
USAGE = Usage(prompt_tokens=5, completion_tokens=2, time_to_first_token=0.01, generation_tps=100.0)


def empty_turn() -> dict[str, Any]:
    return {
        "id": "t1",
        "user": "hi",
        "images": [],
        "parts": [],
        "status": "streaming",
        "error": None,
        "stats": None,
    }


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_apply_op_agrees_with_the_front_end_fixture(case: dict[str, Any]) -> None:
    turn = empty_turn()
    for op in case["ops"]:
        apply_op(turn, op)
    assert turn == {"id": "t1", "user": "hi", "images": [], **case["expected"]}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sent() -> list[list[Op]]:
    return []


@pytest.fixture
def batcher(clock: Clock, sent: list[list[Op]]) -> Batcher:
    return Batcher(sent.append, interval=0.04, clock=clock)


def merged(ops: list[Op]) -> list[Op]:
    """Ops with adjacent text of the same pane joined (batch boundaries removed)."""
    out: list[Op] = []
    for op in ops:
        at = {"think": 1, "text": 1, "tool_delta": 2}.get(op[0])
        if at is not None and out and out[-1][:at] == op[:at]:
            out[-1] = [*out[-1][:at], out[-1][at] + op[at]]
        else:
            out.append(list(op))
    return out


async def test_first_op_goes_out_at_once_then_batches(
    batcher: Batcher, clock: Clock, sent: list[list[Op]]
) -> None:
    batcher.add(["text", "a"])
    assert sent == [[["text", "a"]]]
    for piece in "bcd":
        clock.now += 0.01
        batcher.add(["text", piece])
    assert len(sent) == 1
    clock.now += 0.011
    batcher.add(["text", "e"])
    assert sent[1:] == [[["text", "bcde"]]]
    assert batcher.messages == 2


async def test_the_timer_sends_the_tail(
    batcher: Batcher, clock: Clock, sent: list[list[Op]]
) -> None:
    batcher.add(["text", "a"])
    batcher.add(["text", "b"])
    assert sent == [[["text", "a"]]]
    await asyncio.sleep(0.08)
    assert sent == [[["text", "a"]], [["text", "b"]]]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["think", "a"], ["text", "b"]),
        (["text", "a"], ["tool_delta", "0-0", "{"]),
        (["tool_delta", "0-0", "{"], ["tool_delta", "0-1", "{"]),
        (["tool_call", "0-0", "c", "f", {}], ["tool_result", "0-1", "x", None]),
    ],
)
async def test_a_new_pane_flushes_the_old_one(
    batcher: Batcher, clock: Clock, sent: list[list[Op]], first: Op, second: Op
) -> None:
    batcher.add(["text", "lead"])  # the leading message
    clock.now += 0.001
    batcher.add(first)
    clock.now += 0.001
    batcher.add(second)
    assert sent[1] == [first]
    batcher.flush()
    assert sent[2] == [second]


async def test_thinking_end_travels_with_the_thinking_pane(
    batcher: Batcher, clock: Clock, sent: list[list[Op]]
) -> None:
    batcher.add(["text", "lead"])
    batcher.add(["think", "hm"])
    batcher.add(["think_end", 0.5])
    batcher.add(["text", "x"])
    assert sent[1] == [["think", "hm"], ["think_end", 0.5]]


async def test_same_kind_text_merges_but_other_tools_do_not(
    batcher: Batcher, clock: Clock, sent: list[list[Op]]
) -> None:
    batcher.add(["text", "lead"])
    batcher.add(["tool_delta", "0-0", "{"])
    batcher.add(["tool_delta", "0-0", '"a"'])
    batcher.add(["tool_call", "0-0", "c", "f", {"a": 1}])
    batcher.add(["tool_delta", "0-0", "}"])
    batcher.flush()
    assert sent[1] == [
        ["tool_delta", "0-0", '{"a"'],
        ["tool_call", "0-0", "c", "f", {"a": 1}],
        ["tool_delta", "0-0", "}"],
    ]


@pytest.mark.parametrize(("gap", "flushed"), [(0.02, False), (0.036, True)])
async def test_size_flush_respects_the_minimum_gap(
    batcher: Batcher, clock: Clock, sent: list[list[Op]], gap: float, flushed: bool
) -> None:
    batcher.add(["text", "lead"])
    clock.now += gap
    batcher.add(["text", "x" * 300])
    assert (len(sent) == 2) is flushed


async def test_flush_sends_nothing_when_empty(batcher: Batcher, sent: list[list[Op]]) -> None:
    batcher.flush()
    assert sent == []


async def test_sent_batches_are_not_mutated_later(
    batcher: Batcher, clock: Clock, sent: list[list[Op]]
) -> None:
    op = ["text", "a"]
    batcher.add(op)
    clock.now += 0.001
    batcher.add(["text", "b"])
    batcher.flush()
    assert op == ["text", "a"]
    assert sent == [[["text", "a"]], [["text", "b"]]]


async def test_recorder_turns_events_into_ops_and_the_entry(clock: Clock) -> None:
    sent: list[list[Op]] = []
    batcher = Batcher(sent.append, interval=3600, clock=clock)
    recorder = OpRecorder("t1", "weather?", batcher, clock=clock)
    call = ToolCall(0, "call_a", "get_weather", {"city": "Paris"})
    events = [
        RoundStart(0),
        ThinkingDelta("Let me "),
        ThinkingDelta("check."),
        ContentDelta("Checking."),
        ToolCallDelta(0, '{"name": "get_weather"'),
        call,
        ToolCallError(1, "{bad", "invalid JSON"),
        Done("tool_calls", USAGE),
        ToolResult("call_a", "get_weather", {"city": "Paris"}, '{"sky": "sunny"}'),
        RoundStart(1),
        ThinkingDelta("Sunny."),
        ContentDelta("It is sunny."),
        Done("stop", USAGE),
    ]
    for event in events:
        if isinstance(event, ContentDelta):
            clock.now += 1.5
        recorder.add(event)
    entry = recorder.finish(None, "boom")
    ops = [op for batch in sent for op in batch]
    assert merged(ops) == [
        ["think", "Let me check."],
        ["think_end", 1.5],
        ["text", "Checking."],
        ["tool_delta", "0-0", '{"name": "get_weather"'],
        ["tool_call", "0-0", "call_a", "get_weather", {"city": "Paris"}],
        ["tool_error", "0-1", "{bad", "invalid JSON"],
        ["tool_result", "0-0", '{"sky": "sunny"}', None],
        ["think", "Sunny."],
        ["think_end", 1.5],
        ["text", "It is sunny."],
        ["end", "error", "boom", None],
    ]
    replayed = empty_turn() | {"user": "weather?"}
    for op in ops:
        apply_op(replayed, op)
    assert entry == replayed
    assert [p["kind"] for p in entry["parts"]] == [
        "thinking",
        "content",
        "tool",
        "tool",
        "thinking",
        "content",
    ]


async def test_the_entry_keeps_the_thumbnails_it_was_given(clock: Clock) -> None:
    sent: list[list[Op]] = []
    thumbnails = ["data:image/jpeg;base64,AAAA", "data:image/jpeg;base64,BBBB"]
    recorder = OpRecorder("t1", "what is this?", Batcher(sent.append), images=thumbnails)
    thumbnails.clear()  # the entry holds its own list
    recorder.add(ContentDelta("A cat."))
    entry = recorder.finish(None, "boom")
    assert entry["images"] == ["data:image/jpeg;base64,AAAA", "data:image/jpeg;base64,BBBB"]
    assert all(op[0] != "images" for batch in sent for op in batch), "no op carries images"


async def test_recorder_closes_thinking_left_open(clock: Clock) -> None:
    sent: list[list[Op]] = []
    batcher = Batcher(sent.append, clock=clock)
    recorder = OpRecorder("t1", "u", batcher, clock=clock)
    recorder.add(ThinkingDelta("hm"))
    clock.now += 2.25
    entry = recorder.finish(None)
    assert entry["parts"] == [{"kind": "thinking", "text": "hm", "seconds": 2.25}]
    assert entry["status"] == "error"
