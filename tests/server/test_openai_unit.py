"""Pure translation (no server, no model): request mapping and event → chunk shapes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mlxnb._messages import normalize_messages
from mlxnb._server import openai as oa
from mlxnb._server.errors import error_body
from mlxnb._server.schemas import ChatCompletionRequest
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallError,
    Usage,
)

USAGE = Usage(prompt_tokens=7, completion_tokens=3, cached_tokens=5)


def chat_request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"max_tokens": None}),
        ({"max_tokens": 9}, {"max_tokens": 9}),
        ({"max_tokens": 9, "max_completion_tokens": 4}, {"max_tokens": 4}),
        ({"top_k": -1, "stop": "END"}, {"max_tokens": None, "top_k": 0, "stop": ["END"]}),
        (
            {"temperature": 0.5, "seed": 3, "presence_penalty": 0},
            {"max_tokens": None, "temperature": 0.5, "seed": 3},
        ),
        (
            {"chat_template_kwargs": {"enable_thinking": False, "x": 1}},
            {"max_tokens": None, "chat_template_kwargs": {"x": 1}},
        ),
    ],
)
def test_sampling_options_reach_the_engine(
    fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert oa.chat_call(chat_request(**fields)).options == expected


def test_messages_are_normalised_for_the_template() -> None:
    call = oa.chat_call(
        chat_request(
            messages=[
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning": "hm",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": {"a": 1}},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "2"},
            ],
            chat_template_kwargs={"enable_thinking": True},
        )
    )
    # The server passes messages on as sent; the engine's one normaliser shapes them.
    system, assistant, tool = normalize_messages(call.messages).messages
    assert system == {"role": "system", "content": "be brief"}
    assert assistant["reasoning_content"] == "hm" and "reasoning" not in assistant
    assert assistant["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert tool == {"role": "tool", "tool_call_id": "c", "content": "2"}
    assert call.enable_thinking is True


TOOLS = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "function": {"name": "b"}}, {"name": "b"}),
    ],
)
def test_tool_choice_keeps_every_tool_and_reaches_the_engine(choice: Any, expected: Any) -> None:
    call = oa.chat_call(chat_request(tools=TOOLS, tool_choice=choice))
    assert [t["function"]["name"] for t in call.tools or []] == ["a", "b"]
    chosen = call.options.get("tool_choice")
    if isinstance(chosen, dict):  # either OpenAI's shape or the engine's short one
        chosen = {"name": chosen.get("name") or chosen["function"]["name"]}
    assert chosen == expected


@pytest.mark.parametrize(
    ("fmt", "schema"),
    [
        (None, None),
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}},
            {"type": "array"},
        ),
    ],
)
def test_response_format(fmt: Any, schema: Any) -> None:
    assert oa.chat_call(chat_request(response_format=fmt)).json_schema == schema


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": []},
        {"n": 17},
        {"temperature": -1},
        {"stop": [""]},
        {"top_logprobs": 21},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ],
)
def test_schema_limits(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        chat_request(**fields)


texts = st.text(alphabet="ab <>/\n", max_size=6)
events = st.lists(
    st.one_of(
        st.builds(ContentDelta, texts),
        st.builds(ThinkingDelta, texts),
        st.builds(ToolCallDelta, st.just(0), texts),
        st.builds(ToolCallError, st.just(0), texts, st.just("bad")),
    ),
    max_size=12,
)


@given(events, st.integers(0, 3), st.sampled_from(["stop", "length", "tool_calls", "cancelled"]))
def test_stream_and_whole_agree(body: list[Event], calls: int, reason: Any) -> None:
    stream = [
        *body,
        *(ToolCall(i, f"call_{i}", "f", {"i": i}) for i in range(calls)),
        Done(reason, USAGE),
    ]
    chunks = oa.ChatChunks("id", "m", include_usage=True)
    pieces = [chunks.start(), *(c for e in stream for c in chunks.event(e))]
    whole = oa.chat_completion(stream, id="id", model="m", created=chunks.created)
    message = whole["choices"][0]["message"]
    deltas = [p["choices"][0]["delta"] for p in pieces if p["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == (message["content"] or "")
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message.get(
        "reasoning_content", ""
    )
    streamed_calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [c["index"] for c in streamed_calls] == list(range(calls))
    assert [{k: c[k] for k in ("id", "type", "function")} for c in streamed_calls] == message.get(
        "tool_calls", []
    )
    finishes = [p["choices"][0]["finish_reason"] for p in pieces if p["choices"]]
    assert finishes[-1] == whole["choices"][0]["finish_reason"] and not any(finishes[:-1])
    assert pieces[-1]["usage"] == whole["usage"] and pieces[-1]["choices"] == []
    assert whole["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}


def test_cancelled_reads_as_stop_and_error_body_shape() -> None:
    assert oa.finish_reason("cancelled") == "stop"
    assert error_body("m", "t", "c", "p") == {
        "error": {"message": "m", "type": "t", "param": "p", "code": "c"}
    }
    assert oa.sse("[DONE]") == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("effort", "thinking", "budget"),
    [
        (None, None, None),
        ("none", False, None),
        ("minimal", False, None),
        ("low", True, 1024),
        ("medium", True, 4096),
        ("high", True, None),
    ],
)
def test_reasoning_effort_is_thinking_with_a_budget(
    effort: Any, thinking: bool | None, budget: int | None
) -> None:
    call = oa.chat_call(chat_request(reasoning_effort=effort))
    assert call.enable_thinking is thinking
    assert call.options.get("thinking_budget") == budget
