"""The official ``openai`` client against the real server, engine and tiny model."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def call_text(name: str, arguments: dict[str, Any]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@dataclass
class Reply:
    """One answer, gathered the same way from a completion or from a stream."""

    content: str = ""
    reasoning: str = ""
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None
    ids: set[str] = field(default_factory=set)


def ask(client: openai.OpenAI, model: str, messages: list[Any], stream: bool, **kw: Any) -> Reply:
    reply = Reply()
    if "max_tokens" not in kw and "max_completion_tokens" not in kw:
        kw["max_tokens"] = 96
    if not stream:
        response = client.chat.completions.create(model=model, messages=messages, **kw)
        message = response.choices[0].message
        reply.content = message.content or ""
        reply.reasoning = (message.model_extra or {}).get("reasoning_content") or ""
        for index, call in enumerate(message.tool_calls or []):
            reply.tool_calls[index] = {
                "id": call.id,
                "name": call.function.name,
                "arguments": call.function.arguments,
            }
        reply.finish_reason = response.choices[0].finish_reason
        reply.usage = response.usage
        reply.ids.add(response.id)
        return reply
    chunks = client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **kw,
    )
    for chunk in chunks:
        reply.ids.add(chunk.id)
        if chunk.usage is not None:
            assert chunk.choices == []
            reply.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            reply.content += delta.content or ""
            reply.reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            for call in delta.tool_calls or []:
                seen = reply.tool_calls.setdefault(call.index, {"arguments": ""})
                if call.id:
                    assert seen.setdefault("id", call.id) == call.id  # stable id
                if call.function and call.function.name:
                    seen["name"] = call.function.name
                if call.function and call.function.arguments:
                    seen["arguments"] += call.function.arguments
            reply.finish_reason = choice.finish_reason or reply.finish_reason
    return reply


both = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


def test_lists_the_served_model(client: openai.OpenAI, model_id: str) -> None:
    assert [model.id for model in client.models.list()] == [model_id]
    assert client.models.retrieve(model_id).id == model_id


@both
def test_chat_returns_the_forced_answer_with_usage(
    client: openai.OpenAI, model_id: str, scripted: Any, stream: bool
) -> None:
    text = "Hello there, friend."
    reply = ask(client, model_id, [{"role": "user", "content": f"say:{text}"}], stream)
    assert (reply.content, reply.reasoning, reply.finish_reason) == (text, "", "stop")
    assert len(reply.ids) == 1
    answer_tokens = len(scripted.tokenizer.encode(text, add_special_tokens=False))
    assert reply.usage.completion_tokens in (answer_tokens, answer_tokens + 1)  # + end token
    assert reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.prompt_tokens_details.cached_tokens >= 0


@both
def test_prompt_lookup_reports_its_drafts_as_prediction_tokens(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    text = "def add(a, b):\n    return a + b\n" * 4
    messages = [{"role": "user", "content": f"Copy this:\n{text}"}]
    options: dict[str, Any] = {"temperature": 0, "max_tokens": 48}
    plain = ask(client, model_id, messages, stream, **options)
    drafted = ask(client, model_id, messages, stream, **options, extra_body={"prompt_lookup": 8})
    assert drafted.content == plain.content
    details = drafted.usage.completion_tokens_details
    assert details.accepted_prediction_tokens > 0
    assert details.rejected_prediction_tokens >= 0
    assert plain.usage.completion_tokens_details.accepted_prediction_tokens == 0


@both
def test_max_tokens_ends_with_length(client: openai.OpenAI, model_id: str, stream: bool) -> None:
    messages = [{"role": "user", "content": "say:one two three four five six seven eight"}]
    reply = ask(client, model_id, messages, stream, max_completion_tokens=3)
    assert reply.finish_reason == "length"
    assert reply.usage.completion_tokens == 3


@both
def test_reasoning_is_separate_and_never_leaks_into_content(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    forced = "<think>\nThe user wants a sum. 2+2=4.\n</think>\n\nThe answer is 4."
    reply = ask(client, model_id, [{"role": "user", "content": f"say:{forced}"}], stream)
    assert reply.reasoning.strip() == "The user wants a sum. 2+2=4."
    assert reply.content == "The answer is 4."
    assert "<think>" not in reply.content and "</think>" not in reply.content


def test_chat_template_kwargs_reach_the_template(client: openai.OpenAI, model_id: str) -> None:
    messages = [{"role": "user", "content": "say:Plain."}]
    default = ask(client, model_id, messages, False)
    off = ask(
        client,
        model_id,
        messages,
        False,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert (off.content, off.reasoning) == ("Plain.", "")
    # enable_thinking=False makes this template append an empty <think></think> block.
    assert off.usage.prompt_tokens > default.usage.prompt_tokens


@pytest.mark.parametrize(
    "extra",
    [
        {"continue_final_message": True},
        {"continue_final_message": True, "add_generation_prompt": False},  # vLLM's usual pair
        {"chat_template_kwargs": {"continue_final_message": True}},
    ],
    ids=["vllm-field", "vllm-pair", "template-kwargs"],
)
@both
def test_a_final_assistant_message_can_be_carried_on(
    client: openai.OpenAI, model_id: str, stream: bool, extra: dict[str, Any]
) -> None:
    messages = [
        {"role": "user", "content": "say: Paris."},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    reply = ask(client, model_id, messages, stream, extra_body=extra)
    assert (reply.content, reply.finish_reason) == (" Paris.", "stop")  # its space kept
    plain = ask(client, model_id, messages, False)  # a new answer after the message
    assert plain.usage.prompt_tokens > reply.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, model_id, messages[:1], False, extra_body=extra)
    assert refused.value.body["param"] == "continue_final_message"  # type: ignore[index]


@both
def test_tool_call_round_trip(client: openai.OpenAI, model_id: str, stream: bool) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "say:" + call_text("get_weather", {"city": "Paris"})}
    ]
    first = ask(client, model_id, messages, stream, tools=TOOLS)
    assert first.finish_reason == "tool_calls"
    assert first.content == ""
    assert list(first.tool_calls) == [0]
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and call["id"]
    assert json.loads(call["arguments"]) == {"city": "Paris"}

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"},
    ]
    final = ask(client, model_id, messages, stream, tools=TOOLS)
    assert (final.content, final.finish_reason, final.tool_calls) == (
        "Result: 18C and sunny",
        "stop",
        {},
    )
    # The call and its result went through the chat template into the prompt.
    assert final.usage.prompt_tokens > first.usage.prompt_tokens + 10


@both
def test_two_tool_calls_get_their_own_index_and_id(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    text = (
        call_text("get_weather", {"city": "Paris"})
        + "\n"
        + call_text("get_weather", {"city": "Oslo"})
    )
    reply = ask(client, model_id, [{"role": "user", "content": f"say:{text}"}], stream, tools=TOOLS)
    assert sorted(reply.tool_calls) == [0, 1]
    cities = [json.loads(reply.tool_calls[i]["arguments"])["city"] for i in (0, 1)]
    assert cities == ["Paris", "Oslo"]
    assert reply.tool_calls[0]["id"] != reply.tool_calls[1]["id"]


@both
def test_json_schema_is_enforced_during_generation(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    # Random weights: without the grammar this model never writes JSON.
    reply = ask(
        client,
        model_id,
        [{"role": "user", "content": "Pick a color."}],
        stream,
        response_format=response_format,
        max_tokens=64,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    value = json.loads(reply.content)
    assert value["color"] in ("red", "green") and isinstance(value["ok"], bool)
    assert reply.finish_reason == "stop"


async def test_sixteen_concurrent_streams_all_get_their_own_answer(
    aclient: openai.AsyncOpenAI, model_id: str
) -> None:
    async def one(i: int) -> str:
        stream = await aclient.chat.completions.create(
            model=model_id,
            stream=True,
            messages=[{"role": "user", "content": f"say:Client {i} gets {i * i}."}],
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        return "".join(parts)

    answers = await asyncio.gather(*(one(i) for i in range(16)))
    assert answers == [f"Client {i} gets {i * i}." for i in range(16)]


@both
def test_a_final_message_cut_while_thinking_carries_on_the_thought(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    messages = [
        {"role": "user", "content": "say: the foxes.\n</think>\n\nThree foxes."},
        {"role": "assistant", "content": "", "reasoning_content": "First I count"},
    ]
    extra = {"continue_final_message": True}
    reply = ask(client, model_id, messages, stream, extra_body=extra)
    # The thought goes on where it stopped (its space kept), then the answer starts as usual.
    assert reply.reasoning.rstrip() == " the foxes."
    assert (reply.content, reply.finish_reason) == ("Three foxes.", "stop")


@pytest.mark.usefixtures("needs_raw_prompts")
@both
def test_text_completion_continues_the_raw_prompt(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    kwargs: dict[str, Any] = {"model": model_id, "prompt": "say:Once upon a time", "max_tokens": 32}
    if not stream:
        response = client.completions.create(**kwargs)
        text, finish = response.choices[0].text, response.choices[0].finish_reason
        assert response.usage is not None and response.usage.completion_tokens > 0
    else:
        chunks = list(client.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        finish = chunks[-1].choices[0].finish_reason
    assert (text, finish) == ("Once upon a time", "stop")


def test_streamed_tool_call_arguments_are_exactly_the_whole_answers(
    client: openai.OpenAI, model_id: str
) -> None:
    # Spacing and key order as the model wrote them, not re-serialised: both ways agree.
    raw = '{"city":  "Zürich",\n "when": {"day": 2, "hours": [9, 17]}}'
    text = f'<tool_call>\n{{"name": "get_weather", "arguments": {raw}}}\n</tool_call>'
    messages = [{"role": "user", "content": f"say:{text}"}]
    whole, streamed = (ask(client, model_id, messages, s, tools=TOOLS) for s in (False, True))
    assert whole.tool_calls[0]["arguments"] == streamed.tool_calls[0]["arguments"] == raw
    assert whole.finish_reason == streamed.finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_chat_logprobs_come_in_openai_s_shape(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    text = "Forced words here."
    messages: Any = [{"role": "user", "content": f"say:{text}"}]
    entries: list[Any] = []
    usage: Any = None
    content = ""
    if stream:
        chunks = client.chat.completions.create(
            model=model_id,
            messages=messages,
            logprobs=True,
            top_logprobs=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in chunks:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                content += choice.delta.content or ""
                if choice.logprobs is not None:
                    entries.extend(choice.logprobs.content or [])
    else:
        response = client.chat.completions.create(
            model=model_id, messages=messages, logprobs=True, top_logprobs=3
        )
        content, usage = response.choices[0].message.content or "", response.usage
        assert response.choices[0].logprobs is not None
        entries = list(response.choices[0].logprobs.content or [])
    assert content == text and len(entries) == usage.completion_tokens
    assert all(entry.logprob == 0.0 and len(entry.top_logprobs) == 3 for entry in entries)
    assert all(entry.top_logprobs[0].token == entry.token for entry in entries)
    assert "".join(entry.token for entry in entries).startswith(text)
    assert entries[0].bytes == list(entries[0].token.encode())


def test_chat_without_logprobs_reports_none(client: openai.OpenAI, model_id: str) -> None:
    response = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "say:ok"}]
    )
    assert response.choices[0].logprobs is None


def test_chat_n_returns_n_choices_with_the_prompt_counted_once(
    client: openai.OpenAI, model_id: str
) -> None:
    messages: Any = [{"role": "user", "content": "Name a colour. " * 10}]
    one = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=4, temperature=0
    )
    four = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=4, temperature=0, n=4
    )
    assert [c.index for c in four.choices] == [0, 1, 2, 3]
    # Greedy: every choice is the lone answer.
    assert {c.message.content for c in four.choices} == {one.choices[0].message.content}
    assert four.usage is not None and one.usage is not None
    assert four.usage.prompt_tokens == one.usage.prompt_tokens
    assert four.usage.completion_tokens == 4 * one.usage.completion_tokens


def test_chat_n_streams_each_choice_and_one_usage_chunk(
    client: openai.OpenAI, model_id: str
) -> None:
    texts: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str | None] = {}
    usages = []
    for chunk in client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "say:Blue, clearly."}],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert texts == {0: "Blue, clearly.", 1: "Blue, clearly."}
    assert finishes == {0: "stop", 1: "stop"}
    assert len(usages) == 1 and usages[0].completion_tokens > 0


def test_seeded_chat_samples_differ_and_repeat(client: openai.OpenAI, model_id: str) -> None:
    def ask() -> list[str]:
        reply = client.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": "Anything."}],
            max_tokens=8,
            temperature=1.0,
            seed=5,
            n=3,
        )
        return [c.message.content or "" for c in reply.choices]

    first = ask()
    assert ask() == first
    assert len(set(first)) > 1
