"""Typed structured answers: pydantic models and JSON schemas in every Python door."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel, Field

import mlxnb
from mlxnb._engine.response_format import as_response_format
from mlxnb.testing import forced_output

ASK = [{"role": "user", "content": "Describe a city as JSON."}]


class City(BaseModel):
    # Bounded, so a random model held to the schema finishes well within max_tokens.
    name: str = Field(max_length=16)
    population: int = Field(ge=0, le=100_000_000)


def test_a_pydantic_model_holds_the_answer_and_parses_it(engine: mlxnb.Engine) -> None:
    # The random model writes nothing sensible: the grammar alone makes the answer a City.
    turn = engine.generate(ASK, response_format=City, max_tokens=200, enable_thinking=False)
    assert turn.finish_reason == "stop"
    assert isinstance(turn.parsed, City)
    assert turn.parsed == City.model_validate_json(turn.content)


def test_forced_text_parses_into_the_model(engine: mlxnb.Engine) -> None:
    text = '{"name":"Lima","population":10000000}'  # the grammar's compact JSON
    force = forced_output(engine.tokenizer, text)
    turn = engine.generate(
        ASK, response_format=City, logits_processors=[force], enable_thinking=False
    )
    assert turn.parsed == City(name="Lima", population=10_000_000)


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        (City, "City"),
        ({"type": "object", "title": "Thing"}, "Thing"),
        ({"type": "json_schema", "json_schema": {"name": "cities", "schema": {}}}, "cities"),
        ({"type": "json_object"}, "json_object"),
        ({"type": "object"}, "json_schema"),
    ],
)
def test_formats_are_read_from_every_shape(spec: Any, name: str) -> None:
    shape = as_response_format(spec)
    assert shape is not None and shape.name == name


def test_a_cut_answer_has_no_parsed_value(engine: mlxnb.Engine) -> None:
    turn = engine.generate(ASK, response_format=City, max_tokens=3, enable_thinking=False)
    assert (turn.finish_reason, turn.parsed) == ("length", None)


def test_the_audit_row_names_the_schema(tiny_model_dir: Any) -> None:
    with (
        mlxnb.AuditLog(":memory:") as audit,
        mlxnb.load(tiny_model_dir, audit=audit, name="audited") as engine,
    ):
        engine.generate(ASK, response_format=City, max_tokens=2, enable_thinking=False)
        assert json.loads(audit.df["sampling"].iloc[-1])["response_format"] == "City"


def test_conversation_turns_carry_the_parsed_answer(engine: mlxnb.Engine) -> None:
    text = '{"name":"Oslo","population":700000}'
    chat = mlxnb.Conversation(
        engine,
        enable_thinking=False,
        generation_options=lambda: {
            "response_format": City,
            "logits_processors": [forced_output(engine.tokenizer, text)],
        },
    )
    turn = asyncio.run(chat.ask("A city please."))
    assert turn.parsed == City(name="Oslo", population=700_000)


def test_evaluate_adds_a_parsed_column(engine: mlxnb.Engine) -> None:
    frame = mlxnb.evaluate(
        ["One city.", "Another city."],
        model=engine,
        response_format=City,
        enable_thinking=False,
        max_tokens=200,
        progress=False,
    )
    assert frame["error"].isna().all()
    assert all(isinstance(value, City) for value in frame["parsed"])


def test_both_spellings_at_once_are_refused(engine: mlxnb.Engine) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="not both"):
        engine.generate(ASK, response_format=City, json_schema={"type": "object"})
