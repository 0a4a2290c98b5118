"""The event vocabulary's helpers: joining consecutive deltas of one kind."""

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
    joined_deltas,
)

THOUGHT, ANSWER = ThinkingDelta, ContentDelta
LOGPROB = TokenLogprob("t", 1, -0.5)
DONE = Done(finish_reason="stop", usage=Usage(1, 1))


@pytest.mark.parametrize(
    ("events", "joined"),
    [
        pytest.param([ANSWER("a"), ANSWER("b"), ANSWER("c")], [ANSWER("abc")], id="one-kind"),
        pytest.param(
            [THOUGHT("h"), THOUGHT("m"), ANSWER("a"), ANSWER("b")],
            [THOUGHT("hm"), ANSWER("ab")],
            id="reasoning-then-answer",
        ),
        pytest.param(
            [ToolCallDelta(0, "{"), ToolCallDelta(0, "}"), ToolCallDelta(1, "{"), ANSWER("x")],
            [ToolCallDelta(0, "{}"), ToolCallDelta(1, "{"), ANSWER("x")],
            id="each-tool-call-apart",
        ),
        pytest.param(
            [LOGPROB, ANSWER("a"), LOGPROB, ANSWER("b")],
            [LOGPROB, ANSWER("a"), LOGPROB, ANSWER("b")],
            id="logprobs-keep-each-token-s-text",
        ),
        pytest.param(
            [ANSWER("a"), ANSWER("b"), ToolCall(0, "c", "f", {}), ANSWER("c"), ANSWER("d")],
            [ANSWER("ab"), ToolCall(0, "c", "f", {}), ANSWER("cd")],
            id="events-between-runs-stay",
        ),
        pytest.param([ANSWER("a"), DONE], [ANSWER("a"), DONE], id="nothing-to-join"),
        pytest.param([], [], id="empty"),
    ],
)
def test_consecutive_deltas_of_one_kind_are_joined(events: list[Any], joined: list[Any]) -> None:
    result = joined_deltas(events)
    assert result == joined
    assert "".join(getattr(e, "text", "") for e in result) == "".join(
        getattr(e, "text", "") for e in events
    )
    if len(result) == len(events):  # nothing joined: the events themselves, not copies
        assert all(a is b for a, b in zip(result, events, strict=True))
