"""The official ``anthropic`` client against ``/v1/messages`` on the real server and tiny model."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from PIL import Image

import mlxnb
from mlxnb._server.background import ServerHandle

API_KEY = "test-key-123"  # as the keyed_server fixture

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
THOUGHT = "<think>\nThe user wants a sum. 2+2=4.\n</think>\n\nThe answer is 4."


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """A tool call in the tiny model's (Qwen3's) format."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def base_url(server: ServerHandle) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def client(server: ServerHandle) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=base_url(server), api_key="unused", max_retries=0, timeout=60
    ) as client:
        yield client


@pytest.fixture
def ask(client: anthropic.Anthropic, model_id: str) -> Any:
    """``ask("say:Hi", stream=...)``: one message, whole or streamed (then folded by the SDK)."""

    def ask(content: Any, *, stream: bool = False, **kw: Any) -> anthropic.types.Message:
        messages = kw.pop("messages", None) or [{"role": "user", "content": content}]
        kw.setdefault("max_tokens", 96)
        if not stream:
            return client.messages.create(model=model_id, messages=messages, **kw)
        with client.messages.stream(model=model_id, messages=messages, **kw) as events:
            return events.get_final_message()

    return ask


def audit_row(engine: mlxnb.Engine, message_id: str) -> Any:
    assert engine.audit is not None
    row = engine.audit.get(message_id)
    assert row is not None, f"no audit row for {message_id}"
    return row


both = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


# -- answers -----------------------------------------------------------------------------------


@both
def test_text_answer_with_usage_and_audit_row(
    ask: Any, model_id: str, engine: mlxnb.Engine, scripted: Any, stream: bool
) -> None:
    text = "Hello there, friend."
    message = ask(f"say:{text}", stream=stream)
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", model_id)
    assert [(block.type, block.text) for block in message.content] == [("text", text)]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    answer_tokens = len(scripted.tokenizer.encode(text, add_special_tokens=False))
    assert message.usage.output_tokens in (answer_tokens, answer_tokens + 1)  # + end token
    cached = message.usage.cache_read_input_tokens
    assert cached is not None and cached >= 0
    row = audit_row(engine, message.id)
    assert (row.source, row.endpoint, row.status, row.content) == (
        "server",
        "/v1/messages",
        "ok",
        text,
    )
    assert message.usage.input_tokens + cached == row.prompt_tokens > 5
    assert message.usage.output_tokens == row.completion_tokens


@both
def test_a_final_assistant_message_is_carried_on(
    ask: Any, engine: mlxnb.Engine, stream: bool
) -> None:
    prefill = '{"city":'
    messages = [
        {"role": "user", "content": 'say: "Paris"}'},
        {"role": "assistant", "content": prefill},
    ]
    message = ask(None, messages=messages, stream=stream)
    # Only what comes after the prefill, its first space kept, as Anthropic answers.
    assert [(block.type, block.text) for block in message.content] == [("text", ' "Paris"}')]
    assert message.stop_reason == "end_turn"
    prompt = engine._loaded_backend().render(messages, None, None, {"continue_final_message": True})
    assert engine.tokenizer.decode(prompt.tokens).endswith(prefill)  # no new turn after it
    row = audit_row(engine, message.id)
    assert (row.prompt_tokens, row.content) == (len(prompt.tokens), ' "Paris"}')


def test_content_blocks_are_joined_into_one_user_message(ask: Any) -> None:
    blocks = [{"type": "text", "text": "say:Two "}, {"type": "text", "text": "blocks."}]
    message = ask(blocks)
    assert message.content[0].text == "Two blocks."


def test_streamed_events_follow_the_messages_sequence(
    client: anthropic.Anthropic, model_id: str
) -> None:
    events = list(
        client.messages.create(
            model=model_id,
            max_tokens=96,
            messages=[{"role": "user", "content": f"say:{THOUGHT}"}],
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e for e in events if e.type == "content_block_start"]
    assert [(e.index, e.content_block.type) for e in starts] == [(0, "thinking"), (1, "text")]
    deltas = [(e.index, e.delta.type) for e in events if e.type == "content_block_delta"]
    thinking = [d for i, d in deltas if i == 0]
    assert set(thinking[:-1]) == {"thinking_delta"} and thinking[-1] == "signature_delta"
    assert {d for i, d in deltas if i == 1} == {"text_delta"}
    # Every block opens before its deltas and closes once, before the next one opens.
    blocks = [(e.type, e.index) for e in events if e.type.startswith("content_block_")]
    assert blocks[0] == ("content_block_start", 0)
    assert blocks.index(("content_block_stop", 0)) < blocks.index(("content_block_start", 1))
    assert blocks[-1] == ("content_block_stop", 1)
    assert [e.type for e in events].count("content_block_stop") == 2
    end = events[-2]
    assert end.delta.stop_reason == "end_turn" and end.usage.output_tokens > 5


@both
def test_thinking_is_a_block_of_its_own(ask: Any, stream: bool) -> None:
    message = ask(f"say:{THOUGHT}", stream=stream)
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.thinking.strip() == "The user wants a sum. 2+2=4."
    assert thinking.signature == ""
    assert text.text == "The answer is 4."


def test_streamed_text_matches_the_final_message(
    client: anthropic.Anthropic, model_id: str
) -> None:
    with client.messages.stream(
        model=model_id,
        max_tokens=96,
        messages=[{"role": "user", "content": "say:One, two, three, four."}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == final.content[0].text == "One, two, three, four."


@both
def test_max_tokens_ends_with_max_tokens(ask: Any, stream: bool) -> None:
    message = ask("say:one two three four five six seven eight", stream=stream, max_tokens=3)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


@both
def test_stop_sequences_end_the_answer_before_them(
    ask: Any, engine: mlxnb.Engine, stream: bool
) -> None:
    message = ask("say:alpha beta STOP gamma", stream=stream, stop_sequences=["STOP", "never"])
    assert message.content[0].text.strip() == "alpha beta"
    row = audit_row(engine, message.id)
    assert json.loads(row.sampling)["stop"] == ["STOP", "never"]


@both
def test_a_matched_stop_sequence_is_reported(ask: Any, stream: bool) -> None:
    message = ask("say:alpha beta STOP gamma", stream=stream, stop_sequences=["never", "STOP"])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")


def test_sampling_fields_reach_the_engine(ask: Any, engine: mlxnb.Engine) -> None:
    # Newer SDKs dropped these arguments; the API still takes them.
    message = ask("say:Sampled.", extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 7})
    assert message.content[0].text == "Sampled."
    sampling = json.loads(audit_row(engine, message.id).sampling)
    assert (sampling["temperature"], sampling["top_p"], sampling["top_k"]) == (0.5, 0.9, 7)


@both
def test_output_config_format_is_enforced_during_generation(ask: Any, stream: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
        "additionalProperties": False,
    }
    # Random weights: without the grammar this model never writes JSON.
    message = ask(
        "Pick a color.",
        stream=stream,
        max_tokens=64,
        thinking={"type": "disabled"},
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    value = json.loads(message.content[0].text)
    assert value["color"] in ("red", "green") and isinstance(value["ok"], bool)
    assert message.stop_reason == "end_turn"


def prompt_tokens(message: anthropic.types.Message) -> int:
    return message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


def test_system_prompt_reaches_the_template(ask: Any) -> None:
    system = "You are a terse assistant who answers in one word."
    plain = ask("say:Yes.")
    as_text = ask("say:Yes.", system=system)
    as_blocks = ask("say:Yes.", system=[{"type": "text", "text": system}])
    assert as_text.content[0].text == as_blocks.content[0].text == "Yes."
    assert prompt_tokens(as_text) == prompt_tokens(as_blocks) > prompt_tokens(plain) + 5


def test_thinking_setting_reaches_the_template(ask: Any) -> None:
    default = ask("say:Plain.")
    off = ask("say:Plain.", thinking={"type": "disabled"})
    on = ask("say:Plain.", thinking={"type": "enabled", "budget_tokens": 1024})
    assert off.content[0].text == on.content[0].text == "Plain."
    # enable_thinking=False makes this template append an empty <think></think> block.
    assert prompt_tokens(off) > prompt_tokens(default) == prompt_tokens(on)


# -- tools -------------------------------------------------------------------------------------


@both
def test_tool_round_trip(ask: Any, stream: bool) -> None:
    first = ask(
        "say:" + call_text("get_weather", {"city": "Paris"}), stream=stream, tools=[WEATHER]
    )
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["tool_use"]
    call = first.content[0]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"}) and call.id

    history = [
        {"role": "user", "content": "say:" + call_text("get_weather", {"city": "Paris"})},
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}
            ],
        },
    ]
    final = ask(None, messages=history, stream=stream, tools=[WEATHER])
    assert [(b.type, b.text) for b in final.content] == [("text", "Result: 18C and sunny")]
    assert final.stop_reason == "end_turn"
    # The call and its result went through the chat template into the prompt.
    assert prompt_tokens(final) > prompt_tokens(first) + 10


def test_tool_result_blocks_and_errors_reach_the_model(ask: Any) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {"type": "text", "text": "no such "},
                        {"type": "text", "text": "city"},
                    ],
                    "is_error": True,
                }
            ],
        },
    ]
    message = ask(None, messages=history, tools=[WEATHER])
    assert message.content[0].text == "Result: Error: no such city"


def test_two_tool_calls_are_two_blocks(ask: Any) -> None:
    text = (
        call_text("get_weather", {"city": "Paris"})
        + "\n"
        + call_text("get_weather", {"city": "Oslo"})
    )
    message = ask(f"say:{text}", tools=[WEATHER])
    assert [block.input["city"] for block in message.content] == ["Paris", "Oslo"]
    assert message.content[0].id != message.content[1].id


def test_tool_choice_none_hides_the_tools(ask: Any) -> None:
    shown = ask("say:No tools.", tools=[WEATHER])
    hidden = ask("say:No tools.", tools=[WEATHER], tool_choice={"type": "none"})
    auto = ask("say:No tools.", tools=[WEATHER], tool_choice={"type": "auto"})
    plain = ask("say:No tools.")
    assert prompt_tokens(hidden) == prompt_tokens(plain) < prompt_tokens(shown)
    assert prompt_tokens(auto) == prompt_tokens(shown)


def test_thinking_in_the_history_reaches_the_template(ask: Any) -> None:
    def history(thinking: bool) -> list[Any]:
        blocks: list[Any] = [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
        ]
        if thinking:
            blocks.insert(
                0, {"type": "thinking", "thinking": "I should look it up.", "signature": "x"}
            )
        return [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [*blocks, {"type": "redacted_thinking", "data": "?"}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"}],
            },
        ]

    without = ask(None, messages=history(False), tools=[WEATHER])
    with_thinking = ask(None, messages=history(True), tools=[WEATHER])
    assert without.content[0].text == with_thinking.content[0].text == "Result: cold"
    # The template renders reasoning after the last user query: the thought is in the prompt.
    assert prompt_tokens(with_thinking) > prompt_tokens(without) + 3


# -- errors ------------------------------------------------------------------------------------


def assert_error(error: anthropic.APIStatusError, status: int, kind: str, *words: str) -> None:
    assert error.status_code == status
    assert isinstance(error.body, dict) and error.body["type"] == "error"
    assert error.type == kind == error.body["error"]["type"]
    assert error.api_message and all(word in error.api_message for word in words), error.body


def test_unknown_model_is_not_found(client: anthropic.Anthropic, model_id: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert_error(caught.value, 404, "not_found_error", "no-such-model", model_id)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"extra_body": {"temperature": 1.5}}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "messages.0.role"),
        ({"tools": [{"name": "bad name!", "input_schema": {}}]}, "tools.0.name"),
        ({"thinking": {"type": "enabled"}}, "budget_tokens"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages.0.content",
        ),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(
    client: anthropic.Anthropic, model_id: str, extra: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {
        "model": model_id,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**body)
    assert_error(caught.value, 400, "invalid_request_error", field)


def test_a_body_without_max_tokens_or_json_is_a_400(server: ServerHandle, model_id: str) -> None:
    url = f"{base_url(server)}/v1/messages"
    missing = httpx.post(url, json={"model": model_id, "messages": []}, timeout=60)
    not_json = httpx.post(url, content=b"{nope", timeout=60)
    for response in (missing, not_json):
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]


CITY = {
    "name": "pick_city",
    "description": "Pick a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
        "additionalProperties": False,  # or the random model adds keys until max_tokens
    },
}


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "any"},
        {"type": "tool", "name": "pick_city"},
        {"type": "any", "disable_parallel_tool_use": True},
    ],
)
def test_forced_tool_choices_make_the_random_model_call(ask: Any, choice: dict[str, Any]) -> None:
    # No "say:" script: the random-weight model answers, and only the grammar makes it call.
    message = ask(
        "Pick one.",
        tools=[WEATHER, CITY] if choice["type"] == "tool" else [CITY],
        tool_choice=choice,
        thinking={"type": "disabled"},
        max_tokens=64,
    )
    calls = [block for block in message.content if block.type == "tool_use"]
    assert calls
    assert all(
        call.name == "pick_city" and call.input["city"] in ("Paris", "Oslo") for call in calls
    )
    if choice.get("disable_parallel_tool_use"):
        # One call, then only the end: the random model would otherwise call on and on.
        assert len(calls) == 1 and message.stop_reason == "tool_use"


def test_without_a_forced_choice_the_random_model_does_not_call(ask: Any) -> None:
    message = ask("Pick one.", tools=[CITY], thinking={"type": "disabled"}, max_tokens=16)
    assert not any(block.type == "tool_use" for block in message.content)


def test_a_named_tool_that_is_not_offered_is_refused(ask: Any) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask("Pick one.", tools=[CITY], tool_choice={"type": "tool", "name": "get_weather"})
    assert "get_weather" in str(caught.value)


def test_blocks_in_the_wrong_role_are_refused(ask: Any) -> None:
    wrong = [
        {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(None, messages=wrong)
    assert_error(caught.value, 400, "invalid_request_error", "messages.0.content.0", "tool_use")


def test_max_tokens_over_the_server_limit_is_refused(ask: Any) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask("say:Hi", max_tokens=5000)  # the test server allows 4096
    assert_error(caught.value, 400, "invalid_request_error", "max_tokens", "4096")


def png_base64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


@both
def test_an_engine_refusal_keeps_its_status_in_anthropic_shape(ask: Any, stream: bool) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": png_base64()}
    content = [{"type": "image", "source": image}, {"type": "text", "text": "What is this?"}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(content, stream=stream)
    assert_error(caught.value, 400, "invalid_request_error", "image")


def test_a_failure_in_a_whole_reply_is_a_500(ask: Any) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        ask("boom:Some text first.")
    assert_error(caught.value, 500, "api_error", "boom")


def test_a_failure_midstream_ends_the_stream_with_an_error_event(
    client: anthropic.Anthropic, model_id: str
) -> None:
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model=model_id,
            max_tokens=64,
            messages=[{"role": "user", "content": "boom:Some text first."}],
        ) as stream,
    ):
        seen.extend(event.type for event in stream)
    assert seen[0] == "message_start" and "message_stop" not in seen
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "api_error"
    assert "boom" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_client_that_leaves_cancels_the_request(
    server: ServerHandle,
    scripted: Any,
    engine: mlxnb.Engine,
    model_id: str,
    wait_until: Any,
    stream: bool,
) -> None:
    spinners = len(scripted.spinners)
    body = {
        "model": model_id,
        "max_tokens": 4000,  # far more than the test ever waits for
        "stream": stream,
        "messages": [{"role": "user", "content": "spin:"}],
    }
    url = f"{base_url(server)}/v1/messages"
    with httpx.Client(timeout=60) as http:
        if stream:
            with http.stream("POST", url, json=body) as response:
                assert next(response.iter_lines()) == "event: message_start"
        else:
            # Wait until generation runs, then give up on the answer.
            with pytest.raises(httpx.ReadTimeout):
                http.post(url, json=body, timeout=httpx.Timeout(60, read=0.5))
    assert len(scripted.spinners) == spinners + 1
    wait_until(lambda: engine.pending == 0)  # EOS is banned: only a cancel ends it early
    assert 0 < scripted.spinners[-1].steps < 4000
    assert engine.audit is not None
    row = engine.audit.to_pandas().iloc[-1]
    assert (row["status"], row["endpoint"]) == ("cancelled", "/v1/messages")


# -- authentication ----------------------------------------------------------------------------


@pytest.fixture
def keyed(keyed_server: ServerHandle, model_id: str) -> Any:
    def ask(**credentials: Any) -> anthropic.types.Message:
        with anthropic.Anthropic(
            base_url=base_url(keyed_server), max_retries=0, timeout=60, **credentials
        ) as client:
            return client.messages.create(
                model=model_id, max_tokens=16, messages=[{"role": "user", "content": "say:In."}]
            )

    return ask


@pytest.mark.parametrize("header", ["api_key", "auth_token"], ids=["x-api-key", "bearer"])
def test_the_key_is_taken_from_either_header(keyed: Any, header: str) -> None:
    assert keyed(**{header: API_KEY}).content[0].text == "In."


@pytest.mark.parametrize("header", ["api_key", "auth_token"], ids=["x-api-key", "bearer"])
def test_a_wrong_key_is_refused(keyed: Any, header: str) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        keyed(**{header: "wrong-key"})
    assert_error(caught.value, 401, "authentication_error", "API key")


def test_no_key_is_refused(keyed_server: ServerHandle, model_id: str) -> None:
    body = {"model": model_id, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{base_url(keyed_server)}/v1/messages", json=body, timeout=60)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_body_over_the_limit_is_a_413_in_anthropic_shape(
    server: ServerHandle, model_id: str
) -> None:
    body = {
        "model": model_id,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "x" * 300_000}],  # the test server takes 256 KiB
    }
    response = httpx.post(f"{base_url(server)}/v1/messages", json=body, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_budget_tokens_closes_the_thinking_block(ask: Any) -> None:
    # "think:" opens a block the random-weight model never closes by itself.
    capped = ask("think:", thinking={"type": "enabled", "budget_tokens": 4}, max_tokens=40)
    kinds = [block.type for block in capped.content]
    assert kinds[0] == "thinking" and "text" in kinds
    uncapped = ask("think:", thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=40)
    assert [block.type for block in uncapped.content] == ["thinking"]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"system": "You are terse."},
        {"tools": [WEATHER]},
        {"tools": [WEATHER], "tool_choice": {"type": "none"}},
        {"thinking": {"type": "disabled"}},
    ],
)
def test_count_tokens_is_what_the_message_reports(
    client: anthropic.Anthropic, ask: Any, model_id: str, extra: dict[str, Any]
) -> None:
    messages = [{"role": "user", "content": "say:Sunny."}]
    counted = client.messages.count_tokens(model=model_id, messages=messages, **extra)
    assert counted.input_tokens == prompt_tokens(ask("say:Sunny.", **extra)) > 5


def test_count_tokens_errors_are_anthropic_shaped(server: ServerHandle, model_id: str) -> None:
    url = f"{base_url(server)}/v1/messages/count_tokens"
    unknown = httpx.post(
        url, json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    )
    assert unknown.status_code == 404 and unknown.json()["type"] == "error"
    malformed = httpx.post(url, json={"model": model_id})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    refused = httpx.post(
        url, json={"model": model_id, "messages": [{"role": "user", "content": "x"}], "stop": ["."]}
    )
    assert refused.status_code == 400 and "stop_sequences" in refused.json()["error"]["message"]


def test_the_anthropic_sdk_lists_and_retrieves_the_models(
    client: anthropic.Anthropic, model_id: str
) -> None:
    page = client.models.list()
    assert [model.id for model in page.data] == [model_id] and not page.has_more
    (listed,) = page.data
    assert listed.display_name == model_id and listed.type == "model"
    assert listed.created_at.tzinfo is not None
    assert client.models.retrieve(model_id).id == model_id
