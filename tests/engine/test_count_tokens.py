"""Counting a request's prompt tokens without running it: the count a real request reports."""

from __future__ import annotations

from typing import Any

import pytest

import mlxnb
from mlxnb.errors import ContextLengthError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Lima?"},
]


@pytest.mark.parametrize(
    "request_",
    [
        {},
        {"tools": [WEATHER]},
        {"tools": [WEATHER], "tool_choice": "none"},
        {"enable_thinking": False},
        {"chat_template_kwargs": {"enable_thinking": True}},
    ],
)
def test_the_count_is_what_the_request_reports(engine: mlxnb.Engine, request_: Any) -> None:
    tools = request_.get("tools")
    options = {k: v for k, v in request_.items() if k not in ("tools", "enable_thinking")}
    thinking = request_.get("enable_thinking")
    counted = engine.count_tokens(ASK, tools, thinking, **options)
    turn = engine.generate(ASK, tools, thinking, max_tokens=1, **options)
    assert counted == turn.usage.prompt_tokens


def test_tools_count_unless_hidden(engine: mlxnb.Engine) -> None:
    bare = engine.count_tokens(ASK)
    assert engine.count_tokens(ASK, [WEATHER]) > bare
    assert engine.count_tokens(ASK, [WEATHER], tool_choice="none") == bare


def test_a_raw_prompt_counts_its_encoding(engine: mlxnb.Engine) -> None:
    text = "The capital of France is"
    assert engine.count_tokens([], prompt=text) == len(engine.tokenizer.encode(text))
    assert engine.count_tokens([], prompt=[1, 2, 3]) == 3


async def test_counting_runs_off_the_loop_and_writes_no_audit_row(tiny_model_dir: Any) -> None:
    with mlxnb.AuditLog(":memory:") as audit, mlxnb.Engine(tiny_model_dir, audit=audit) as engine:
        assert await engine.acount_tokens(ASK) == engine.count_tokens(ASK)
        assert len(audit.df) == 0


def test_an_image_for_a_text_model_is_refused_as_a_request_is(engine: mlxnb.Engine) -> None:
    from PIL import Image

    picture = Image.new("RGB", (8, 8))
    asked = [{"role": "user", "content": [{"type": "image", "image": picture}]}]
    with pytest.raises(mlxnb.InvalidRequestError) as counted:
        engine.count_tokens(asked)
    with pytest.raises(mlxnb.InvalidRequestError) as generated:
        engine.generate(asked, max_tokens=1)
    assert str(counted.value) == str(generated.value)


async def test_fits_context_answers_as_the_engine_would_refuse(engine: mlxnb.Engine) -> None:
    limit = engine.context_length
    assert isinstance(limit, int)
    room = limit - engine.count_tokens(ASK)
    assert engine.fits_context(ASK, max_tokens=room)
    assert not engine.fits_context(ASK, max_tokens=room + 1)
    with pytest.raises(ContextLengthError):
        engine.generate(ASK, max_tokens=room + 1)
    assert await engine.afits_context(ASK)  # the default max_tokens fits this model
