"""Tool calls on ``/v1/chat/completions``: enforced ``tool_choice``, and calls streamed as written.

The wire translation is checked on the real parser (mlx-lm's ``json_tools``, the tiny model's
format) with every split of the text; the HTTP tests run the real server, engine and tiny model.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_lm.tool_parsers.json_tools import parse_tool_call

from mlxnb._engine.parser import EventParser, Markers
from mlxnb._server import openai as oa
from mlxnb.events import Done, Event, ToolCall, ToolCallDelta, Usage

MARKERS = Markers("<think>", "</think>", "<tool_call>", "</tool_call>")
CITY = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
ZONE = {
    "type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": ZONE}}


def parse(pieces: list[str]) -> list[Event]:
    """The events of the real parser fed ``pieces``, ending with ``Done``."""
    parser = EventParser(MARKERS, tool_parser=parse_tool_call)
    events = [event for piece in pieces for event in parser.feed(piece)]
    return [*events, *parser.finish(), Done("stop", Usage())]


def wire(events: list[Event]) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
    """Each event's streamed delta entries, and the non-streamed message of the same events."""
    chunks = oa.ChatChunks("id", "m")
    per_event = [
        [
            entry
            for chunk in chunks.event(e)
            for entry in chunk["choices"][0]["delta"].get("tool_calls", [])
        ]
        for e in events
    ]
    message = oa.chat_completion(events, id="id", model="m", created=0)["choices"][0]["message"]
    return per_event, message


def joined(per_event: list[list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """The calls a client accumulates from the streamed entries, by index."""
    calls: dict[int, dict[str, Any]] = {}
    for entry in (e for entries in per_event for e in entries):
        call = calls.setdefault(entry["index"], {"arguments": "", "openings": 0})
        if "id" in entry:
            call["openings"] += 1
            call.update(id=entry["id"], name=entry["function"]["name"])
        call["arguments"] += entry["function"].get("arguments", "")
    return calls


def split(text: str, cuts: list[int]) -> list[str]:
    points = [0, *sorted(set(c % (len(text) + 1) for c in cuts)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(points)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
layouts = st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :  ")])


@settings(max_examples=200, deadline=None)
@given(
    arguments=st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    name=st.text(min_size=1, max_size=8),
    layout=layouts,
    name_first=st.booleans(),
    before=st.sampled_from(["", "Let me check.", "\n\n"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_streamed_arguments_join_to_the_whole_answer_for_any_split(
    arguments: dict[str, Any],
    name: str,
    layout: tuple[str, str],
    name_first: bool,
    before: str,
    cuts: list[int],
) -> None:
    items, colon = layout
    raw_arguments = json.dumps(arguments, separators=(items, colon), ensure_ascii=False)
    fields = [f'"name"{colon}{json.dumps(name)}', f'"arguments"{colon}{raw_arguments}']
    body = "{" + items.join(fields if name_first else fields[::-1]) + "}"
    text = f"{before}<tool_call>\n{body}\n</tool_call>"
    per_event, message = wire(parse(split(text, cuts)))
    whole = message["tool_calls"]
    streamed = joined(per_event)
    assert len(whole) == 1 and list(streamed) == [0]
    call = streamed[0]
    assert call["openings"] == 1 and call["name"] == name == whole[0]["function"]["name"]
    # Exactly the model's text: the same string streamed and whole, decoding to the parsed call.
    assert call["arguments"] == whole[0]["function"]["arguments"] == raw_arguments
    assert json.loads(call["arguments"]) == arguments


RAW_ARGUMENTS = '{"city": "Pa\\"ris}", "n": [1, {"x": "}"}]}'
CALL = f'<tool_call>\n{{"name": "get_weather", "arguments": {RAW_ARGUMENTS}}}\n</tool_call>'


@pytest.mark.parametrize("at", range(len(CALL) + 1))
def test_every_split_point_streams_the_same_call(at: int) -> None:
    events = parse([CALL[:at], CALL[at:]])
    per_event, message = wire(events)
    call = joined(per_event)[0]
    assert (call["name"], call["arguments"]) == ("get_weather", RAW_ARGUMENTS)
    assert message["tool_calls"][0]["function"]["arguments"] == RAW_ARGUMENTS
    # Written as it came: the call opened and its arguments went out before it was parsed.
    parsed_at = next(i for i, e in enumerate(events) if isinstance(e, ToolCall))
    assert per_event[parsed_at] == []


def test_one_character_at_a_time_sends_the_arguments_in_pieces() -> None:
    per_event, _ = wire(parse(list(CALL)))
    entries = [e for entries in per_event for e in entries]
    assert entries[0] == {
        "index": 0,
        "id": entries[0]["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(e) == {"index", "function"} for e in entries[1:])
    assert [e["function"]["arguments"] for e in entries[1:]] == list(RAW_ARGUMENTS)


def test_a_call_cut_short_keeps_what_was_streamed_and_shows_its_text() -> None:
    raw = '\n{"name": "get_weather", "arguments": {"city": "Pa'
    events = parse([f"Hmm.<tool_call>{raw}"])
    chunks = oa.ChatChunks("id", "m")
    deltas = [c["choices"][0]["delta"] for e in events for c in chunks.event(e)]
    streamed = joined([d.get("tool_calls", []) for d in deltas])
    # The entry that opened stays as it was sent; the raw text follows as content.
    assert streamed == {
        0: {
            "arguments": '{"city": "Pa',
            "openings": 1,
            "id": streamed[0]["id"],
            "name": "get_weather",
        }
    }
    assert "".join(d.get("content", "") for d in deltas) == "Hmm." + raw
    whole = oa.chat_completion(events, id="id", model="m", created=0)["choices"][0]
    assert whole["message"] == {"role": "assistant", "content": "Hmm." + raw}
    assert whole["finish_reason"] == "stop"


def test_a_streamed_call_the_parser_reads_otherwise_is_sent_again_whole() -> None:
    # Two "arguments" keys: JSON keeps the last, the stream had sent the first.
    body = '{"name": "f", "arguments": {"a": 1}, "arguments": {"b": 2}}'
    per_event, message = wire(parse([f"<tool_call>\n{body}\n</tool_call>"]))
    streamed = joined(per_event)
    assert streamed[0]["arguments"] == '{"a": 1}'
    assert (streamed[1]["name"], streamed[1]["arguments"]) == ("f", '{"b": 2}')
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == ['{"b": 2}']


def test_arguments_written_as_a_string_go_out_once_parsed() -> None:
    body = '{"name": "f", "arguments": "{\\"a\\": 1}"}'
    per_event, message = wire(parse([f"<tool_call>\n{body}\n</tool_call>"]))
    assert joined(per_event)[0]["arguments"] == '{"a": 1}'
    assert message["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'


def test_a_call_that_is_not_one_json_object_is_sent_whole_when_parsed() -> None:
    events: list[Event] = [
        ToolCallDelta(0, "[get_weather(city='Paris')]"),
        ToolCall(0, "call_1", "get_weather", {"city": "Paris"}),
        Done("tool_calls", Usage()),
    ]
    per_event, message = wire(events)
    assert per_event[0] == []
    assert per_event[1] == [{"index": 0, **message["tool_calls"][0]}]
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


# -- over HTTP --------------------------------------------------------------------------------


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [
        line.removeprefix("data: ")
        for line in response.iter_lines()
        if line and not line.startswith(":")
    ]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def say(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"say:{text}"}]


def test_http_streams_a_call_in_pieces_that_join_to_the_whole_answer(
    http: httpx.Client, model_id: str
) -> None:
    arguments = '{"city": "Rome", "days": [1, 2]}'
    text = f'<tool_call>\n{{"name": "get_weather", "arguments": {arguments}}}\n</tool_call>'
    body = {"model": model_id, "messages": say(text), "tools": [WEATHER], "max_tokens": 64}
    whole = http.post("/v1/chat/completions", json=body).json()["choices"][0]
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        chunks = sse(response)
    entries = [[*c["choices"][0]["delta"].get("tool_calls", [])] for c in chunks if c["choices"]]
    pieces = [e["function"].get("arguments") for es in entries for e in es]
    assert len([p for p in pieces if p]) > 3  # streamed as written, not sent whole
    call = joined(entries)[0]
    assert call["arguments"] == whole["message"]["tool_calls"][0]["function"]["arguments"]
    assert call["arguments"] == arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"] == "tool_calls"


def test_the_openai_client_accumulates_the_streamed_call(
    client: openai.OpenAI, model_id: str
) -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    options: dict[str, Any] = {
        "model": model_id,
        "messages": say(text),
        "tools": [WEATHER],
        "max_tokens": 64,
    }
    whole = client.chat.completions.create(**options).choices[0].message
    with client.chat.completions.stream(**options) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion().choices[0]
    assert len(deltas) > 1
    (call,) = final.message.tool_calls or []
    assert whole.tool_calls is not None
    assert call.function.arguments == whole.tool_calls[0].function.arguments
    assert call.function.arguments == '{"city": "Paris"}' and call.function.name == "get_weather"
    assert final.finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_http_required_makes_the_random_model_call_a_tool(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    for seed in range(3):
        options: dict[str, Any] = {
            "model": model_id,
            "messages": [{"role": "user", "content": "Weather in Rome?"}],
            "tools": [WEATHER, CLOCK],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_tokens": 128,
            "temperature": 1.0,
            "seed": seed,
            "extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
        }
        if stream:
            with client.chat.completions.stream(**options) as events:
                choice = events.get_final_completion().choices[0]
        else:
            choice = client.chat.completions.create(**options).choices[0]
        (call,) = choice.message.tool_calls or []
        assert choice.finish_reason == "tool_calls"
        schema = CITY if call.function.name == "get_weather" else ZONE
        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_http_a_named_choice_calls_that_function(client: openai.OpenAI, model_id: str) -> None:
    choice = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=128,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    ).choices[0]
    calls = choice.message.tool_calls or []
    assert calls and {c.function.name for c in calls} == {"get_weather"}
    for c in calls:
        jsonschema.validate(json.loads(c.function.arguments), CITY)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "'nope'",
        ),
        ({"tool_choice": "required"}, "needs at least one tool"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            "'get_weather'",
        ),
    ],
)
def test_http_unsatisfiable_choices_are_a_400_naming_the_field(
    http: httpx.Client, chat_body: Any, extra: dict[str, Any], words: str
) -> None:
    response = http.post("/v1/chat/completions", json=chat_body("Hi", **extra))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tool_choice" and words in error["message"]


def test_http_refusals_from_the_engine_are_a_400(http: httpx.Client, chat_body: Any) -> None:
    body = chat_body(
        "Hi",
        tools=[WEATHER],
        tool_choice="required",
        response_format={"type": "json_object"},
    )
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and "json_schema" in response.json()["error"]["message"]
