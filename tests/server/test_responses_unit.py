"""The Responses API translation on its own: bodies → engine arguments, events → responses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlxnb._server import responses as rs
from mlxnb._server.responses_route import ResponseStore, StoredResponse, skeleton
from mlxnb._server.responses_schemas import ResponsesRequest
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


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


def test_items_become_openai_messages_in_order() -> None:
    call = rs.responses_call(
        request(
            instructions="Be brief.",
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Look."}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
                },
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"a": 1}'},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "cold"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "down"}],
                },
                {"role": "developer", "content": "Now answer."},
            ],
        )
    )
    assert call.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning": "Look.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"a": 1}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
        {"role": "tool", "tool_call_id": "c2", "content": "down"},
        {"role": "developer", "content": "Now answer."},
    ]


def test_images_become_the_engines_image_parts() -> None:
    url = "data:image/png;base64,AAAA"
    call = rs.responses_call(
        request(
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What?"},
                        {"type": "input_image", "image_url": url},
                    ],
                }
            ]
        )
    )
    assert call.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_history_comes_first_and_errors_name_the_requests_own_items() -> None:
    history = request(input=[{"role": "user", "content": "one"}]).input
    assert isinstance(history, list)
    call = rs.responses_call(request(input="two"), history)
    assert [m["content"] for m in call.messages] == ["one", "two"]
    bad = request(input=[{"type": "item_reference", "id": "x"}])
    with pytest.raises(rs.ApiError) as caught:
        rs.responses_call(bad, history)
    assert caught.value.param == "input.0.type"


@pytest.mark.parametrize(
    ("fields", "thinking", "schema", "tools"),
    [
        ({}, None, None, None),
        ({"reasoning": {"effort": "none"}}, False, None, None),
        ({"reasoning": {"effort": "low"}}, True, None, None),
        ({"text": {"format": {"type": "text"}}}, None, None, None),
        ({"text": {"format": {"type": "json_object"}}}, None, {"type": "object"}, None),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "array"}}}},
            None,
            {"type": "array"},
            None,
        ),
        (
            {"tools": [{"type": "function", "name": "f"}]},
            None,
            None,
            [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
                }
            ],
        ),
        ({"tools": [{"type": "function", "name": "f"}], "tool_choice": "none"}, None, None, None),
    ],
)
def test_options_reach_the_engine_call(
    fields: dict[str, Any], thinking: bool | None, schema: Any, tools: Any
) -> None:
    call = rs.responses_call(request(max_output_tokens=7, temperature=0.3, **fields))
    assert (call.enable_thinking, call.json_schema, call.tools) == (thinking, schema, tools)
    budget = {"thinking_budget": 1024} if fields.get("reasoning") == {"effort": "low"} else {}
    assert call.options == {"max_tokens": 7, "temperature": 0.3, **budget}


def translate(events: list[Event]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    echo = skeleton(request(), id="resp_1", model="m", created=1)
    out = rs.ResponseEvents(echo)
    stream = [*out.start(), *[e for event in events for e in out.event(event)]]
    whole = rs.ResponseEvents(echo).fold(events)
    return stream, whole


EVENTS: list[Event] = [
    ThinkingDelta("Hm"),
    ThinkingDelta("m."),
    ContentDelta("Hi "),
    ToolCallDelta(0, "<tool_call>"),
    ToolCall(0, "call_1", "f", {"a": 1}),
    ToolCallError(1, "<tool_call>bad", "not JSON"),
    ContentDelta("there"),
    Done(
        "tool_calls",
        Usage(prompt_tokens=5, completion_tokens=9, cached_tokens=2, reasoning_tokens=4),
    ),
]


def test_events_become_items_in_order() -> None:
    stream, whole = translate(EVENTS)
    assert [item["type"] for item in whole["output"]] == [
        "reasoning",
        "message",
        "function_call",
        "message",
    ]
    assert whole["output"][0]["content"] == [{"type": "reasoning_text", "text": "Hmm."}]
    assert whole["output"][3]["content"][0]["text"] == "<tool_call>badthere"
    assert whole["output"][2]["arguments"] == '{"a": 1}'
    assert whole["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 4},  # the engine's count
        "total_tokens": 14,
    }
    assert stream[-1] == {
        "type": "response.completed",
        "sequence_number": len(stream) - 1,
        "response": whole,
    }
    assert len({item["id"] for item in whole["output"]}) == 4


@given(st.lists(st.sampled_from(EVENTS[:-1]), max_size=12), st.sampled_from(["stop", "length"]))
def test_the_stream_folds_to_the_whole_response(events: list[Event], reason: str) -> None:
    stream, whole = translate([*events, Done(reason, Usage())])  # type: ignore[arg-type]
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))
    # Replaying the stream's item events gives the same output as the fold.
    items: dict[int, dict[str, Any]] = {}
    for event in stream:
        if event["type"] == "response.output_item.done":
            items[event["output_index"]] = event["item"]
    assert [items[i] for i in sorted(items)] == whole["output"]
    opened = [e["output_index"] for e in stream if e["type"] == "response.output_item.added"]
    assert opened == list(range(len(whole["output"])))
    for index, item in enumerate(whole["output"]):
        deltas = "".join(
            e.get("delta", "")
            for e in stream
            if e.get("output_index") == index and e["type"].endswith(".delta")
        )
        text = item["arguments"] if item["type"] == "function_call" else item["content"][0]["text"]
        assert deltas == text
    assert whole["status"] == ("incomplete" if reason == "length" else "completed")
    if reason == "length" and whole["output"]:
        assert whole["output"][-1]["status"] in ("incomplete", "completed")


def test_a_failure_midstream_is_a_failed_response() -> None:
    out = rs.ResponseEvents(skeleton(request(), id="resp_1", model="m", created=1), len)
    out.start()
    out.event(ContentDelta("Hi"))
    out.fail("boom")
    [failed] = out.end()
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "boom"}
    assert json.loads(rs.sse(failed).decode().split("data: ", 1)[1]) == failed


def test_the_store_forgets_the_least_recently_used() -> None:
    store = ResponseStore(capacity=2)
    for name in ("a", "b"):
        store.put(name, StoredResponse({"id": name}, (), name))
    assert store.get("a") is not None  # a is now the most recently used
    store.put("c", StoredResponse({"id": "c"}, (), "c"))
    assert (store.get("a") is not None, store.get("b"), store.get("c") is not None) == (
        True,
        None,
        True,
    )
    assert len(store) == 2
    assert store.delete("a") and not store.delete("a")
