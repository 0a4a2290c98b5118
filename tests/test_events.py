"""The event vocabulary's helpers for joining consecutive deltas of one kind."""

from __future__ import annotations

from typing import Any

import pytest

from mlxnb.events import (
    ContentDelta,
    Done,
    ThinkingDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
    continues_text,
    joined_run,
)


@pytest.mark.parametrize(
    ("delta", "event", "continues"),
    [
        pytest.param(ContentDelta("a"), ContentDelta("b"), True, id="answer-answer"),
        pytest.param(ThinkingDelta("a"), ThinkingDelta("b"), True, id="thought-thought"),
        pytest.param(ThinkingDelta("a"), ContentDelta("b"), False, id="thought-answer"),
        pytest.param(ContentDelta("a"), ThinkingDelta("b"), False, id="answer-thought"),
        pytest.param(ToolCallDelta(0, "{"), ToolCallDelta(0, "}"), True, id="same-tool-call"),
        pytest.param(ToolCallDelta(0, "{"), ToolCallDelta(1, "{"), False, id="next-tool-call"),
        pytest.param(ContentDelta("a"), ToolCallDelta(0, "{"), False, id="answer-tool-call"),
        pytest.param(ToolCallDelta(0, "{"), ContentDelta("a"), False, id="tool-call-answer"),
        pytest.param(ContentDelta("a"), TokenLogprob("t", 1, -0.5), False, id="logprob"),
        pytest.param(ContentDelta("a"), ToolCall(0, "c", "f", {}), False, id="parsed-call"),
        pytest.param(ContentDelta("a"), Done("stop", Usage(1, 1)), False, id="done"),
    ],
)
def test_only_text_of_the_same_kind_continues_a_delta(
    delta: Any, event: Any, continues: bool
) -> None:
    assert continues_text(event, delta) is continues


@pytest.mark.parametrize(
    ("run", "joined"),
    [
        pytest.param(
            [ContentDelta("a"), ContentDelta("b"), ContentDelta("c")], ContentDelta("abc")
        ),
        pytest.param([ThinkingDelta("h"), ThinkingDelta("m")], ThinkingDelta("hm")),
        pytest.param([ToolCallDelta(2, "{"), ToolCallDelta(2, "}")], ToolCallDelta(2, "{}")),
    ],
    ids=["answer", "thought", "tool-call"],
)
def test_a_run_of_deltas_joins_into_one_of_its_kind(run: list[Any], joined: Any) -> None:
    assert joined_run(run) == joined


def test_a_delta_alone_is_itself() -> None:
    delta = ContentDelta("a")
    assert joined_run([delta]) is delta
