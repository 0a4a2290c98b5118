"""The official ``openai`` client's Responses API against ``/v1/responses`` on the real server."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response
from PIL import Image

import mlxnb
from mlxnb._server.background import ServerHandle

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
THOUGHT = "<think>\nThe user wants a sum. 2+2=4.\n</think>\n\nThe answer is 4."


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """A tool call in the tiny model's (Qwen3's) format."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.fixture
def ask(client: openai.OpenAI, model_id: str) -> Any:
    """``ask("say:Hi", stream=...)``: one response, whole or streamed (folded by the SDK)."""

    def ask(input: Any, *, stream: bool = False, **kw: Any) -> Response:
        kw.setdefault("max_output_tokens", 96)
        if not stream:
            return client.responses.create(model=model_id, input=input, **kw)
        with client.responses.stream(model=model_id, input=input, **kw) as events:
            return events.get_final_response()

    return ask


def audit_row(engine: mlxnb.Engine, response_id: str) -> Any:
    assert engine.audit is not None
    row = engine.audit.get(response_id)
    assert row is not None, f"no audit row for {response_id}"
    return row


def comparable(response: Response) -> dict[str, Any]:
    """A response without what differs between two runs of one request (ids, times, cache)."""
    body = response.model_dump(exclude={"id", "created_at", "completed_at"})
    for item in body["output"]:
        item.pop("id")
        for part in item.get("content") or []:
            part.pop("parsed", None)  # the SDK's stream helper adds its parse of the text
    body["usage"]["input_tokens_details"].pop("cached_tokens")
    return body


both = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


# -- answers -----------------------------------------------------------------------------------


@both
def test_text_answer_with_usage_and_audit_row(
    ask: Any, model_id: str, engine: mlxnb.Engine, scripted: Any, stream: bool
) -> None:
    text = "Hello there, friend."
    response = ask(f"say:{text}", stream=stream)
    assert response.id.startswith("resp_")
    assert (response.object, response.model, response.status) == ("response", model_id, "completed")
    assert response.output_text == text
    [message] = response.output
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    assert [(part.type, part.text, part.annotations) for part in message.content] == [
        ("output_text", text, [])
    ]
    usage = response.usage
    assert usage is not None
    answer_tokens = len(scripted.tokenizer.encode(text, add_special_tokens=False))
    assert usage.output_tokens in (answer_tokens, answer_tokens + 1)  # + end token
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    row = audit_row(engine, response.id)
    assert (row.source, row.endpoint, row.status, row.content) == (
        "server",
        "/v1/responses",
        "ok",
        text,
    )
    assert (usage.input_tokens, usage.output_tokens) == (row.prompt_tokens, row.completion_tokens)
    assert usage.input_tokens_details.cached_tokens <= usage.input_tokens


@pytest.mark.parametrize("text", ["Short.", THOUGHT], ids=["text", "thinking"])
def test_streamed_and_whole_responses_agree(ask: Any, text: str) -> None:
    whole = ask(f"say:{text}", metadata={"k": "v"}, user="u1", temperature=0.5, top_p=0.9)
    streamed = ask(
        f"say:{text}", stream=True, metadata={"k": "v"}, user="u1", temperature=0.5, top_p=0.9
    )
    assert comparable(streamed) == comparable(whole)
    assert (whole.metadata, whole.user, whole.temperature, whole.top_p) == (
        {"k": "v"},
        "u1",
        0.5,
        0.9,
    )


def test_streamed_events_follow_the_responses_sequence(
    client: openai.OpenAI, model_id: str
) -> None:
    events = list(
        client.responses.create(
            model=model_id, input=f"say:{THOUGHT}", max_output_tokens=96, stream=True
        )
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    middle = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]][2:-1]
    assert middle == [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    final = events[-1].response
    reasoning, message = final.output
    for index, item in enumerate(final.output):
        mine = [e for e in events if getattr(e, "output_index", None) == index]
        assert all(getattr(e, "item_id", item.id) == item.id for e in mine)
        deltas = "".join(e.delta for e in mine if e.type.endswith(".delta"))
        done = [e.text for e in mine if e.type.endswith("_text.done")]
        assert done == [deltas]
    assert reasoning.content[0].text.strip() == "The user wants a sum. 2+2=4."
    assert message.content[0].text == "The answer is 4."


@both
def test_reasoning_is_an_item_of_its_own(ask: Any, stream: bool) -> None:
    response = ask(f"say:{THOUGHT}", stream=stream)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.summary == []
    assert [part.type for part in reasoning.content] == ["reasoning_text"]
    assert reasoning.content[0].text.strip() == "The user wants a sum. 2+2=4."
    assert response.output_text == "The answer is 4."
    usage = response.usage
    assert 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens


def test_streamed_text_deltas_make_the_final_text(client: openai.OpenAI, model_id: str) -> None:
    with client.responses.stream(
        model=model_id, input="say:One, two, three, four.", max_output_tokens=96
    ) as stream:
        pieces = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(pieces) > 1
    assert "".join(pieces) == final.output_text == "One, two, three, four."


def test_max_output_tokens_makes_an_incomplete_response(
    ask: Any, client: openai.OpenAI, model_id: str
) -> None:
    whole = ask("say:one two three four five six seven eight", max_output_tokens=3)
    events = list(
        client.responses.create(
            model=model_id,
            input="say:one two three four five six seven eight",
            max_output_tokens=3,
            stream=True,
        )
    )
    assert events[-1].type == "response.incomplete"
    streamed = events[-1].response
    for response in (whole, streamed):
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.usage is not None and response.usage.output_tokens == 3
        assert response.output[0].status == "incomplete"
        assert response.max_output_tokens == 3
    assert comparable(streamed) == comparable(whole)


@both
def test_json_schema_format_is_enforced_during_generation(ask: Any, stream: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
        "additionalProperties": False,
    }
    # Random weights: without the grammar this model never writes JSON.
    response = ask(
        "Pick a color.",
        stream=stream,
        max_output_tokens=64,
        reasoning={"effort": "none"},
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}},
    )
    value = json.loads(response.output_text)
    assert value["color"] in ("red", "green") and isinstance(value["ok"], bool)
    assert response.status == "completed"
    assert response.text is not None and response.text.format.type == "json_schema"


def input_tokens(response: Response) -> int:
    assert response.usage is not None
    return response.usage.input_tokens


def test_instructions_become_the_system_message(ask: Any) -> None:
    system = "You are a terse assistant who answers in one word."
    plain = ask("say:Yes.")
    instructed = ask("say:Yes.", instructions=system)
    as_message = ask(
        [{"role": "system", "content": system}, {"role": "user", "content": "say:Yes."}]
    )
    as_developer = ask(
        [
            {"role": "developer", "content": [{"type": "input_text", "text": system}]},
            {"role": "user", "content": "say:Yes."},
        ]
    )
    assert instructed.output_text == "Yes." and instructed.instructions == system
    assert input_tokens(instructed) > input_tokens(plain) + 5
    assert input_tokens(instructed) == input_tokens(as_message) == input_tokens(as_developer)


def test_reasoning_effort_reaches_the_template(ask: Any) -> None:
    default = ask("say:Plain.")
    off = ask("say:Plain.", reasoning={"effort": "minimal"})
    on = ask("say:Plain.", reasoning={"effort": "high"})
    assert off.output_text == on.output_text == "Plain."
    # enable_thinking=False makes this template append an empty <think></think> block.
    assert input_tokens(off) > input_tokens(default) == input_tokens(on)
    assert off.reasoning is not None and off.reasoning.effort == "minimal"


# -- conversations -----------------------------------------------------------------------------


@both
def test_previous_response_id_continues_the_conversation(
    ask: Any, engine: mlxnb.Engine, stream: bool
) -> None:
    first = ask("say:Alpha beta.", stream=stream, instructions="Be brief.")
    second = ask("say:Gamma.", stream=stream, previous_response_id=first.id)
    # The same conversation sent in full, without the first turn's instructions (they do not
    # carry over).
    explicit = ask(
        [
            {"role": "user", "content": "say:Alpha beta."},
            {"role": "assistant", "content": "Alpha beta."},
            {"role": "user", "content": "say:Gamma."},
        ]
    )
    assert second.output_text == explicit.output_text == "Gamma."
    assert second.previous_response_id == first.id
    assert input_tokens(second) == input_tokens(explicit) > input_tokens(first)
    assert audit_row(engine, second.id).conversation_id == first.id
    third = ask("say:Delta.", previous_response_id=second.id)
    assert input_tokens(third) > input_tokens(second)
    assert audit_row(engine, third.id).conversation_id == first.id


@both
def test_function_call_round_trip(ask: Any, stream: bool) -> None:
    first = ask(
        "say:" + call_text("get_weather", {"city": "Paris"}), stream=stream, tools=[WEATHER]
    )
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.status == "completed"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert call.call_id and call.id and call.id != call.call_id
    assert first.tools[0].name == "get_weather"

    result = {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}
    chained = ask([result], stream=stream, previous_response_id=first.id, tools=[WEATHER])
    assert chained.output_text == "Result: 18C and sunny"
    # Stateless: the output items sent back as input give the same prompt.
    history = [
        {"role": "user", "content": "say:" + call_text("get_weather", {"city": "Paris"})},
        *[item.model_dump(exclude_none=True) for item in first.output],
        result,
    ]
    stateless = ask(history, stream=stream, tools=[WEATHER])
    assert stateless.output_text == "Result: 18C and sunny"
    assert input_tokens(chained) == input_tokens(stateless) > input_tokens(first) + 10


def test_two_function_calls_are_two_items(ask: Any) -> None:
    text = (
        call_text("get_weather", {"city": "Paris"})
        + "\n"
        + call_text("get_weather", {"city": "Oslo"})
    )
    response = ask(f"say:{text}", tools=[WEATHER])
    assert [json.loads(item.arguments)["city"] for item in response.output] == ["Paris", "Oslo"]
    assert len({item.call_id for item in response.output}) == 2


def test_tool_choice_none_hides_the_tools(ask: Any) -> None:
    shown = ask("say:No tools.", tools=[WEATHER])
    hidden = ask("say:No tools.", tools=[WEATHER], tool_choice="none")
    auto = ask("say:No tools.", tools=[WEATHER], tool_choice="auto")
    plain = ask("say:No tools.")
    assert input_tokens(hidden) == input_tokens(plain) < input_tokens(shown)
    assert input_tokens(auto) == input_tokens(shown)
    assert hidden.tool_choice == "none"


def test_reasoning_items_in_the_history_reach_the_template(ask: Any) -> None:
    def history(reasoning: bool) -> list[Any]:
        items: list[Any] = [
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
        ]
        if reasoning:
            thought = [{"type": "reasoning_text", "text": "I should look it up."}]
            items.insert(0, {"type": "reasoning", "id": "rs_1", "summary": [], "content": thought})
        return [
            {"role": "user", "content": "Weather?"},
            *items,
            {"type": "function_call_output", "call_id": "c1", "output": "cold"},
        ]

    without = ask(history(False), tools=[WEATHER])
    with_reasoning = ask(history(True), tools=[WEATHER])
    assert without.output_text == with_reasoning.output_text == "Result: cold"
    assert input_tokens(with_reasoning) > input_tokens(without) + 3


def test_a_stored_response_can_be_retrieved_and_deleted(ask: Any, client: openai.OpenAI) -> None:
    created = ask("say:Keep me.")
    assert client.responses.retrieve(created.id).model_dump() == created.model_dump()
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        ask("say:Again.", previous_response_id=created.id)


def test_store_false_keeps_nothing_but_the_audit_row(
    ask: Any, client: openai.OpenAI, engine: mlxnb.Engine
) -> None:
    response = ask("say:Forget me.", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        ask("say:Again.", previous_response_id=response.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert audit_row(engine, response.id).content == "Forget me."


# -- errors ------------------------------------------------------------------------------------


def assert_error(error: openai.APIStatusError, status: int, field: str, *words: str) -> None:
    assert error.status_code == status
    body = error.body
    assert isinstance(body, dict), body
    assert body["param"] == field and field in body["message"], body
    assert all(word in body["message"] for word in words), body


def test_an_unknown_previous_response_id_is_not_found(ask: Any) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ask("say:Hi", previous_response_id="resp_nope")
    assert_error(caught.value, 404, "previous_response_id", "resp_nope")
    assert caught.value.code == "not_found"


def test_an_unknown_model_is_not_found(client: openai.OpenAI, model_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="no-such-model", input="hi")
    assert_error(caught.value, 404, "model", "no-such-model", model_id)


@pytest.mark.parametrize(
    ("extra", "field", "word"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type", "web_search"),
        (
            {"tools": [WEATHER, {"type": "file_search", "vector_store_ids": []}]},
            "tools.1.type",
            "file_search",
        ),
        ({"tool_choice": {"type": "allowed_tools", "tools": []}}, "tool_choice", "allowed_tools"),
        ({"truncation": "auto"}, "truncation", "auto"),
        ({"background": True}, "background", "background"),
        ({"max_tool_calls": 2}, "max_tool_calls", "max_tool_calls"),
        ({"conversation": "conv_1"}, "conversation", "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0.type", "item_reference"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input.0.content.0",
            "input_file",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input.0.content.0",
            "file_id",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": "hi"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{no"},
                ]
            },
            "input.1.arguments",
            "JSON",
        ),
        ({"input": []}, "input", "input"),
    ],
)
def test_what_cannot_be_served_is_a_400_naming_the_field(
    ask: Any, extra: dict[str, Any], field: str, word: str
) -> None:
    input = extra.pop("input", "say:Hi")
    with pytest.raises(openai.BadRequestError) as caught:
        ask(input, tools=extra.pop("tools", [WEATHER]), **extra)
    assert_error(caught.value, 400, field, word)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"temperature": 3}, "temperature"),
        ({"max_output_tokens": 5000}, "max_output_tokens"),  # the test server allows 4096
        ({"input": [{"role": "robot", "content": "hi"}]}, "input"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ],
)
def test_a_bad_field_is_a_422_naming_it(
    http: httpx.Client, model_id: str, body: dict[str, Any], field: str
) -> None:
    response = http.post("/v1/responses", json={"model": model_id, "input": "hi", **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and field in error["message"]


def png_data_url() -> str:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@both
def test_an_image_reaches_the_engine_which_refuses_it_for_a_text_model(
    ask: Any, stream: bool
) -> None:
    content = [
        {"type": "input_image", "image_url": png_data_url(), "detail": "auto"},
        {"type": "input_text", "text": "What is this?"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        ask([{"role": "user", "content": content}], stream=stream)
    assert caught.value.status_code == 400 and "image" in caught.value.message


def test_a_failure_in_a_whole_response_is_a_500(ask: Any) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        ask("boom:Some text first.")
    assert "boom" in caught.value.message


def test_a_failure_midstream_ends_the_stream_with_response_failed(
    client: openai.OpenAI, model_id: str
) -> None:
    events = list(
        client.responses.create(
            model=model_id, input="boom:Some text first.", max_output_tokens=64, stream=True
        )
    )
    assert events[0].type == "response.created"
    assert "response.output_text.delta" in [e.type for e in events]
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert "boom" in failed.error.message


def test_a_client_that_leaves_cancels_the_request(
    server: ServerHandle, scripted: Any, engine: mlxnb.Engine, model_id: str, wait_until: Any
) -> None:
    spinners = len(scripted.spinners)
    body = {"model": model_id, "input": "spin:", "max_output_tokens": 4000, "stream": True}
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as http,
        http.stream("POST", "/v1/responses", json=body) as response,
    ):
        assert next(response.iter_lines()) == "event: response.created"
    assert len(scripted.spinners) == spinners + 1
    wait_until(lambda: engine.pending == 0)  # EOS is banned: only a cancel ends it early
    assert 0 < scripted.spinners[-1].steps < 4000
    assert engine.audit is not None
    row = engine.audit.to_pandas().iloc[-1]
    assert (row["status"], row["endpoint"]) == ("cancelled", "/v1/responses")


async def test_concurrent_async_streams_each_get_their_own_answer(
    aclient: openai.AsyncOpenAI, model_id: str
) -> None:
    async def one(i: int) -> str:
        async with aclient.responses.stream(
            model=model_id, input=f"say:Answer number {i}.", max_output_tokens=32
        ) as stream:
            return (await stream.get_final_response()).output_text

    answers = await asyncio.gather(*(one(i) for i in range(6)))
    assert answers == [f"Answer number {i}." for i in range(6)]


CITY = {
    "type": "function",
    "name": "pick_city",
    "description": "Pick a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
        "additionalProperties": False,  # or the random model adds keys until max_tokens
    },
}


@pytest.mark.parametrize(
    ("choice", "parallel"),
    [("required", True), ({"type": "function", "name": "pick_city"}, True), ("required", False)],
)
def test_forced_tool_choices_make_the_random_model_call(
    ask: Any, choice: Any, parallel: bool
) -> None:
    # No "say:" script: the random-weight model answers, and only the grammar makes it call.
    response = ask(
        "Pick one.",
        tools=[WEATHER, CITY] if isinstance(choice, dict) else [CITY],
        tool_choice=choice,
        parallel_tool_calls=parallel,
        reasoning={"effort": "none"},
        max_output_tokens=64,
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and all(call.name == "pick_city" for call in calls)
    assert all(json.loads(call.arguments)["city"] in ("Paris", "Oslo") for call in calls)
    assert response.parallel_tool_calls is parallel
    if not parallel:
        assert len(calls) == 1


def test_without_a_forced_choice_the_random_model_does_not_call(ask: Any) -> None:
    response = ask("Pick one.", tools=[CITY], reasoning={"effort": "none"}, max_output_tokens=16)
    assert not any(item.type == "function_call" for item in response.output)


LOGPROBS = ["message.output_text.logprobs"]


def answer_logprobs(response: Response) -> list[Any]:
    """The log-probabilities of a response's message text."""
    (message,) = [item for item in response.output if item.type == "message"]
    (part,) = message.content
    assert part.type == "output_text" and part.logprobs is not None
    return list(part.logprobs)


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_come_with_the_answer_s_text(ask: Any, stream: bool) -> None:
    text = "Forced words here."
    response = ask(f"say:{text}", stream=stream, include=LOGPROBS, top_logprobs=3)
    entries = answer_logprobs(response)
    assert response.output_text == text and response.usage is not None
    assert len(entries) == response.usage.output_tokens  # the end-of-turn token's included
    assert "".join(entry.token for entry in entries[:-1]) == text
    # Forced tokens are certain; each one's alternatives start with itself.
    assert all(entry.logprob == 0.0 and len(entry.top_logprobs) == 3 for entry in entries)
    assert all(entry.top_logprobs[0].token == entry.token for entry in entries)


def test_logprobs_match_the_chat_route_s(client: openai.OpenAI, model_id: str, ask: Any) -> None:
    """The random model's own (uncertain) log-probabilities, as the chat route gives them."""
    options = {"temperature": 0, "top_logprobs": 2}
    response = ask("Hi", max_output_tokens=6, include=LOGPROBS, **options)
    chat = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        logprobs=True,
        **options,
    )
    assert chat.choices[0].logprobs is not None
    expected = [(e.token, e.logprob) for e in chat.choices[0].logprobs.content or []]
    got = [(e.token, e.logprob) for e in answer_logprobs(response)]
    assert [token for token, _ in got] == [token for token, _ in expected] and len(got) == 6
    assert [value for _, value in got] == pytest.approx([value for _, value in expected])
    assert any(value < -0.01 for _, value in got)  # not a forced answer


def test_streamed_deltas_carry_the_final_logprobs(client: openai.OpenAI, model_id: str) -> None:
    streamed: list[Any] = []
    with client.responses.stream(
        model=model_id, input="say:One two three.", include=LOGPROBS
    ) as events:
        for event in events:
            if event.type == "response.output_text.delta":
                streamed.extend(event.logprobs)
        final = events.get_final_response()
    whole = answer_logprobs(final)
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole]
    assert len(whole) == 5  # four tokens of text and the end of the turn


@pytest.mark.parametrize("ask_for", [{"include": LOGPROBS}, {"top_logprobs": 1}, {}])
def test_logprobs_only_when_asked(ask: Any, ask_for: dict[str, Any]) -> None:
    response = ask("say:Sure.", **ask_for)
    assert bool(answer_logprobs(response)) == bool(ask_for)


def test_reasoning_tokens_get_no_logprobs(ask: Any) -> None:
    response = ask(f"say:{THOUGHT}", include=LOGPROBS)
    entries = answer_logprobs(response)
    assert response.output_text == "The answer is 4."
    # The whitespace after the block, which the parser drops from the text, is the answer's.
    assert "".join(entry.token for entry in entries).lstrip().startswith("The answer is 4.")
    assert response.usage is not None
    reasoning = response.usage.output_tokens_details.reasoning_tokens
    assert len(entries) == response.usage.output_tokens - reasoning


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"instructions": "Answer in French."},
        {"tools": [WEATHER]},
        {"tools": [WEATHER], "tool_choice": "none"},
        {"reasoning": {"effort": "none"}},
    ],
)
def test_input_tokens_are_what_the_response_reports(
    client: openai.OpenAI, ask: Any, model_id: str, extra: dict[str, Any]
) -> None:
    counted = client.responses.input_tokens.count(model=model_id, input="say:Oui.", **extra)
    response = ask("say:Oui.", **extra)
    assert response.usage is not None
    assert counted.input_tokens == response.usage.input_tokens > 5
    assert counted.object == "response.input_tokens"


def test_input_tokens_follow_a_previous_response_and_need_no_model_here(
    client: openai.OpenAI, ask: Any
) -> None:
    first = ask("say:Hello.")
    follow = {"input": "say:Again.", "previous_response_id": first.id}
    counted = client.responses.input_tokens.count(**follow)  # one model served: it is used
    assert counted.input_tokens == input_tokens(ask(**follow))
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(input="x", previous_response_id="resp_missing")
