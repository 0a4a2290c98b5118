"""Structured output is an engine option: every door gets it, not only the HTTP server."""

from __future__ import annotations

import json
from typing import Any

import pytest

import mlxnb

SCHEMA = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
    "required": ["color", "ok"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Pick a color."}]
NO_THINKING = {"enable_thinking": False}


def matches(text: str) -> bool:
    value: Any = json.loads(text)
    return value["color"] in ("red", "green") and isinstance(value["ok"], bool)


def test_python_generate_keeps_to_the_schema(engine: mlxnb.Engine) -> None:
    # Random weights: without the grammar this model never writes JSON (the control below).
    turn = engine.generate(ASK, json_schema=SCHEMA, max_tokens=64, chat_template_kwargs=NO_THINKING)
    assert matches(turn.content) and turn.finish_reason == "stop"
    free = engine.generate(ASK, max_tokens=64, chat_template_kwargs=NO_THINKING)
    with pytest.raises(ValueError):
        matches(free.content)


async def test_a_conversation_passes_it_through_generation_options(engine: mlxnb.Engine) -> None:
    options = {"json_schema": SCHEMA, "max_tokens": 64, "chat_template_kwargs": NO_THINKING}
    chat = mlxnb.Conversation(engine, generation_options=options)
    turn = await chat.ask("Pick a color.")
    assert matches(turn.content)


def test_evaluate_rows_keep_to_the_schema(engine: mlxnb.Engine) -> None:
    frame = mlxnb.evaluate(
        ["Pick a color.", "Another one."],
        model=engine,
        progress=False,
        json_schema=SCHEMA,
        max_tokens=64,
        chat_template_kwargs=NO_THINKING,
    )
    assert frame["content"].map(matches).all()


def test_an_invalid_schema_is_refused_before_any_work(engine: mlxnb.Engine) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="schema"):
        engine.generate(ASK, json_schema={"type": 12})
