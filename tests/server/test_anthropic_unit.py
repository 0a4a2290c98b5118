"""The Messages API translation on its own: bodies → engine arguments, events → bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlxnb._server import anthropic as an
from mlxnb._server.anthropic_schemas import MessagesRequest
from mlxnb._server.errors import ApiError
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


def request(**fields: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    return MessagesRequest.model_validate({**body, **fields})


def test_history_becomes_openai_messages_in_order() -> None:
    call = an.messages_call(
        request(
            system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Look it up.", "signature": "s"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Oslo"}},
                        {"type": "tool_use", "id": "t2", "name": "w", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "cold"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "down"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
        )
    )
    assert call.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning": "Look it up.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city": "Oslo"}'},
                },
                {"id": "t2", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "cold"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: down"},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "Compare."},
    ]
    call = an.messages_call(request(messages=[{"role": "user", "content": content}]))
    assert call.messages == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "Compare."},
            ],
        }
    ]


def test_tools_sampling_and_thinking_become_engine_arguments() -> None:
    tool = {"name": "w", "description": "Weather.", "input_schema": {"type": "object"}}
    call = an.messages_call(
        request(
            tools=[tool],
            tool_choice={"type": "auto"},
            temperature=0.3,
            top_k=5,
            stop_sequences=["END"],
            thinking={"type": "enabled", "budget_tokens": 2048},
            metadata={"user_id": "u"},
            service_tier="auto",
            unknown_field=1,
        )
    )
    assert call.tools == [
        {
            "type": "function",
            "function": {"name": "w", "description": "Weather.", "parameters": {"type": "object"}},
        }
    ]
    assert call.options == {
        "max_tokens": 8,
        "temperature": 0.3,
        "top_k": 5,
        "stop": ["END"],
        "thinking_budget": 2048,  # enforced by the engine
    }
    assert call.enable_thinking is True and call.json_schema is None
    assert an.messages_call(request(tools=[tool], tool_choice={"type": "none"})).tools is None
    assert an.messages_call(request(thinking={"type": "disabled"})).enable_thinking is False
    assert an.messages_call(request(thinking={"type": "adaptive"})).enable_thinking is None
    fmt = {"format": {"type": "json_schema", "schema": {"type": "array"}}}
    assert an.messages_call(request(output_config=fmt)).json_schema == {"type": "array"}


@pytest.mark.parametrize(
    ("choice", "options"),
    [
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "tool", "name": "w"}, {"tool_choice": {"name": "w"}}),
        ({"type": "auto", "disable_parallel_tool_use": True}, {"parallel_tool_calls": False}),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
    ],
)
def test_forced_choices_reach_the_engine(choice: dict[str, Any], options: dict[str, Any]) -> None:
    tool = {"name": "w", "input_schema": {"type": "object"}}
    call = an.messages_call(request(tools=[tool], tool_choice=choice))
    assert {k: v for k, v in call.options.items() if k != "max_tokens"} == options


@pytest.mark.parametrize(
    "content", ["{", [{"type": "text", "text": "The answer"}, {"type": "text", "text": " is"}]]
)
def test_a_final_assistant_message_is_a_prefill_the_template_carries_on(content: Any) -> None:
    prefill = {"role": "assistant", "content": content}
    call = an.messages_call(request(messages=[{"role": "user", "content": "hi"}, prefill]))
    assert call.options["chat_template_kwargs"] == {"continue_final_message": True}
    text = content if isinstance(content, str) else "The answer is"
    assert call.messages[-1] == {"role": "assistant", "content": text}
    assert "chat_template_kwargs" not in an.messages_call(request()).options


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://example.com/a.png"},
                            }
                        ],
                    },
                    {"role": "user", "content": "hi"},
                ]
            },
            "messages.0.content.0",
        ),
        *[
            ({"messages": [{"role": "user", "content": "hi"}, prefill], **more}, named)
            for prefill, more, named in [
                ({"role": "assistant", "content": "The answer is "}, {}, "messages.1.content"),
                (
                    {"role": "assistant", "content": [{"type": "text", "text": "Hm\n"}]},
                    {},
                    "messages.1.content",
                ),
                (
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": "Let me check."},
                            {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                        ],
                    },
                    {},
                    "messages.1.content.1",
                ),
                (
                    {"role": "assistant", "content": "{"},
                    {"thinking": {"type": "enabled", "budget_tokens": 1024}},
                    "thinking",
                ),
                (
                    {"role": "assistant", "content": "{"},
                    {
                        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                        "tool_choice": {"type": "any"},
                    },
                    "tool_choice",
                ),
                (
                    {"role": "assistant", "content": "{"},
                    {
                        "output_config": {
                            "format": {"type": "json_schema", "schema": {"type": "object"}}
                        }
                    },
                    "output_config.format",
                ),
            ]
        ],
    ],
)
def test_what_cannot_be_served_is_refused_naming_the_field(
    fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(an.MessagesError) as caught:
        an.messages_call(request(**fields))
    assert (caught.value.status, caught.value.type, caught.value.param) == (
        400,
        "invalid_request_error",
        named,
    )


def test_errors_take_anthropics_shape() -> None:
    for status, kind in [
        (422, "invalid_request_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (503, "api_error"),
    ]:
        error = an.messages_error(ApiError(status, "why", "whatever"))
        response = error.response()
        assert response.status_code == (400 if status == 422 else status)
        assert json.loads(response.body) == {
            "type": "error",
            "error": {"type": kind, "message": "why"},
        }
    assert an.messages_error(ApiError(429, "busy", "x")).response().headers["Retry-After"] == "1"
    other = ApiError(401, "key", "authentication_error")
    assert an.for_path("/v1/chat/completions", other) is other
    assert an.for_path("/v1/messages", other).type == "authentication_error"


USAGE = Usage(prompt_tokens=30, completion_tokens=7, cached_tokens=12)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("cancelled", "end_turn"),
    ],
)
def test_stop_reasons(reason: Any, expected: str) -> None:
    body = an.message_body([Done(reason, USAGE)], id="msg_1", model="m")
    assert (body["stop_reason"], body["stop_sequence"]) == (expected, None)
    assert body["usage"] == {
        "input_tokens": 18,
        "output_tokens": 7,
        "cache_read_input_tokens": 12,
    }


def test_a_whole_message_keeps_the_blocks_in_order() -> None:
    events: list[Event] = [
        ThinkingDelta("Hmm, "),
        ThinkingDelta("weather."),
        ContentDelta("Let me check."),
        ToolCallDelta(0, "<tool_call>raw"),
        ToolCall(0, "call_1", "w", {"city": "Oslo"}),
        ToolCallError(1, "<tool_call>{bad", "not JSON"),
        Done("tool_calls", USAGE),
    ]
    body = an.message_body(events, id="msg_1", model="m")
    assert body["content"] == [
        {"type": "thinking", "thinking": "Hmm, weather.", "signature": ""},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Oslo"}},
        {"type": "text", "text": "<tool_call>{bad"},
    ]
    assert (body["id"], body["type"], body["role"], body["model"]) == (
        "msg_1",
        "message",
        "assistant",
        "m",
    )


def test_sse_names_each_event() -> None:
    assert an.sse({"type": "message_stop"}) == (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


pieces = st.one_of(
    st.builds(ThinkingDelta, st.text(min_size=1, max_size=5)),
    st.builds(ContentDelta, st.text(min_size=1, max_size=5)),
    st.builds(
        ToolCall,
        st.just(0),
        st.text(min_size=1, max_size=4),
        st.just("f"),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    st.builds(ToolCallError, st.just(0), st.text(min_size=1, max_size=5), st.just("bad")),
)


def expected_blocks(events: list[Event]) -> list[dict[str, Any]]:
    """The blocks a message should hold: runs of thinking or text, one block per call."""
    blocks: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, ToolCall):
            blocks.append(
                {"type": "tool_use", "id": event.id, "name": event.name, "input": event.arguments}
            )
            continue
        if isinstance(event, ThinkingDelta):
            kind, key, text = "thinking", "thinking", event.text
        elif isinstance(event, ContentDelta | ToolCallError):
            kind, key = "text", "text"
            text = event.text if isinstance(event, ContentDelta) else event.raw
        else:
            continue
        if not blocks or blocks[-1]["type"] != kind:
            blocks.append(
                {"type": kind, key: ""} | ({"signature": ""} if kind == "thinking" else {})
            )
        blocks[-1][key] += text
    return blocks


@given(st.lists(pieces, max_size=12))
def test_the_stream_folds_to_the_whole_message(events: list[Event]) -> None:
    """Streaming and non-streaming agree; every block opens, closes, and is indexed in order."""
    events = [*events, Done("stop", USAGE)]
    out = an.MessageEvents("msg_1", "m")
    stream = [*out.start(), *(item for event in events for item in out.event(event))]
    assert stream[0]["type"] == "message_start"
    assert [item["type"] for item in stream[-2:]] == ["message_delta", "message_stop"]
    opened: list[int] = []
    content: list[dict[str, Any]] = []
    for item in stream:
        if item["type"] == "content_block_start":
            assert item["index"] == len(opened) and (not opened or opened[-1] < 0)
            opened.append(item["index"])
            content.append(dict(item["content_block"]))
        elif item["type"] == "content_block_delta":
            assert opened and opened[-1] == item["index"]
            delta, block = item["delta"], content[item["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                block["input"] = json.loads(delta["partial_json"])
        elif item["type"] == "content_block_stop":
            assert opened[-1] == item["index"]
            opened[-1] = -1  # closed
    assert all(index < 0 for index in opened)
    whole = an.message_body(events, id="msg_1", model="m")["content"]
    assert content == whole == expected_blocks(events)
