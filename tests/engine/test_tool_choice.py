"""``tool_choice`` and ``parallel_tool_calls`` are engine options, enforced by a grammar.

The tiny model has random weights: left alone it never writes a tool call (the controls below),
so every call it makes under ``"required"`` or a named choice comes from the enforcement.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import mlxnb
from mlxnb.events import ThinkingDelta, ToolCall, ToolCallDelta, ToolCallError, Turn
from mlxnb.testing import forced_output

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city for some days.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Rome"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
SEEDS = range(20)


def generate_all(engine: mlxnb.Engine, seeds: range, **options: Any) -> list[Turn]:
    """One turn per seed, submitted together so the engine batches them."""

    async def run() -> list[Turn]:
        turns = [
            engine.agenerate(ASK, TOOLS, False, seed=seed, temperature=1.0, **options)
            for seed in seeds
        ]
        return list(await asyncio.gather(*turns))

    return asyncio.run(run())


def valid(call: ToolCall) -> bool:
    jsonschema.validate(call.arguments, SCHEMAS[call.name])
    return True


def test_required_makes_every_seed_call_a_tool(engine: mlxnb.Engine) -> None:
    turns = generate_all(engine, SEEDS, tool_choice="required", max_tokens=256)
    for turn in turns:
        assert turn.tool_calls and all(valid(call) for call in turn.tool_calls)
        # Parallel calls are allowed; only a call cut off by max_tokens may fail to parse.
        assert not turn.tool_call_errors or turn.finish_reason == "length"
        assert turn.content == "" and turn.finish_reason in ("tool_calls", "length")


def test_without_enforcement_the_same_model_calls_no_tool(engine: mlxnb.Engine) -> None:
    for choice in (None, "auto"):
        turns = generate_all(engine, SEEDS, tool_choice=choice, max_tokens=48)
        assert not any(turn.tool_calls or turn.tool_call_errors for turn in turns)


def test_required_with_one_call_gives_exactly_one_parsed_call(engine: mlxnb.Engine) -> None:
    turns = generate_all(
        engine, SEEDS, tool_choice="required", parallel_tool_calls=False, max_tokens=256
    )
    for turn in turns:
        assert len(turn.tool_calls) == 1 and valid(turn.tool_calls[0])
        assert not turn.tool_call_errors and turn.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "choice", [{"name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}]
)
def test_a_named_choice_calls_that_function(engine: mlxnb.Engine, choice: Any) -> None:
    turns = generate_all(engine, range(10), tool_choice=choice, max_tokens=256)
    names = {call.name for turn in turns for call in turn.tool_calls}
    assert names == {"get_time"}
    assert all(turn.tool_calls and all(map(valid, turn.tool_calls)) for turn in turns)


def test_the_other_tools_stay_in_the_prompt_of_a_named_choice(engine: mlxnb.Engine) -> None:
    named = engine.generate(ASK, TOOLS, False, tool_choice={"name": "get_time"}, max_tokens=1)
    alone = engine.generate(ASK, [TIME], False, tool_choice={"name": "get_time"}, max_tokens=1)
    assert named.usage.prompt_tokens > alone.usage.prompt_tokens


def test_none_hides_the_tools(engine: mlxnb.Engine) -> None:
    hidden = engine.generate(ASK, TOOLS, False, tool_choice="none", max_tokens=1)
    without = engine.generate(ASK, None, False, max_tokens=1)
    offered = engine.generate(ASK, TOOLS, False, max_tokens=1)
    assert hidden.usage.prompt_tokens == without.usage.prompt_tokens
    assert offered.usage.prompt_tokens > without.usage.prompt_tokens


def marker_bias(engine: mlxnb.Engine, *markers: str) -> dict[int, float]:
    """A strong push towards writing ``markers`` at every step."""
    return {engine.tokenizer.encode(m, add_special_tokens=False)[0]: 100.0 for m in markers}


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_one_call_at_most_when_parallel_calls_are_off(engine: mlxnb.Engine, choice: str) -> None:
    bias = marker_bias(engine, "<tool_call>")
    single = generate_all(
        engine,
        range(8),
        tool_choice=choice,
        parallel_tool_calls=False,
        logit_bias=bias,
        max_tokens=128,
    )
    for turn in single:
        assert len(turn.tool_calls) == 1 and valid(turn.tool_calls[0])
        assert not turn.tool_call_errors and turn.finish_reason == "tool_calls"


def test_the_controls_of_one_call_make_more_or_none(engine: mlxnb.Engine) -> None:
    bias = marker_bias(engine, "<tool_call>")
    # Pushed the same way with parallel calls allowed, the model calls again and again ...
    parallel = generate_all(
        engine, range(8), tool_choice="required", logit_bias=bias, max_tokens=96
    )
    assert all(len(turn.tool_calls) > 1 for turn in parallel)
    # ... and free, it never writes one clean call.
    free = generate_all(engine, range(8), logit_bias=bias, max_tokens=96)
    assert not any(len(turn.tool_calls) == 1 and not turn.tool_call_errors for turn in free)


def test_reasoning_stays_free_before_the_forced_call(engine: mlxnb.Engine) -> None:
    think = forced_output(engine.tokenizer, "<think>\nhmm\n</think>\n\n", then="free")
    turn = engine.generate(
        ASK, TOOLS, True, tool_choice="required", logits_processors=[think], max_tokens=256
    )
    assert turn.reasoning.strip() == "hmm"
    assert turn.tool_calls and all(map(valid, turn.tool_calls))


def test_a_tool_call_cannot_open_inside_the_reasoning(engine: mlxnb.Engine) -> None:
    def events(**options: Any) -> list[Any]:
        think = forced_output(engine.tokenizer, "<think>\n", then="free")
        return list(
            engine.stream_sync(
                ASK,
                TOOLS,
                True,
                logits_processors=[think],
                logit_bias=marker_bias(engine, "<tool_call>"),
                max_tokens=12,
                temperature=1.0,
                seed=1,
                **options,
            )
        )

    forced = events(tool_choice="required")
    assert any(isinstance(e, ThinkingDelta) for e in forced)
    assert not any(isinstance(e, ToolCallDelta | ToolCall | ToolCallError) for e in forced)
    # The control: the same push without a grammar opens a call at once.
    assert any(isinstance(e, ToolCallDelta) for e in events())


@pytest.mark.parametrize(
    ("tools", "options", "words"),
    [
        (None, {"tool_choice": "required"}, "needs at least one tool"),
        (TOOLS, {"tool_choice": {"name": "book_flight"}}, "'book_flight'"),
        (TOOLS, {"tool_choice": "sometimes"}, "tool_choice must be"),
        (TOOLS, {"tool_choice": {"type": "function"}}, "tool_choice must be"),
        (
            TOOLS,
            {"tool_choice": "required", "json_schema": {"type": "object"}},
            "json_schema",
        ),
    ],
)
def test_unsatisfiable_choices_are_refused(
    engine: mlxnb.Engine, tools: Any, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match=words):
        engine.generate(ASK, tools, **options)


def test_a_tool_schema_llguidance_cannot_compile_is_refused(engine: mlxnb.Engine) -> None:
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": 12}}}
    with pytest.raises(mlxnb.InvalidRequestError, match="tool_choice"):
        engine.generate(ASK, [broken], tool_choice="required")


@pytest.fixture(scope="module")
def pythonic_engine(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mlxnb.Engine]:
    """The tiny model, told that its tool calls are Python calls (mlx-lm's ``pythonic``)."""
    folder = tmp_path_factory.mktemp("pythonic") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "tool_parser_type": "pythonic"}))
    with mlxnb.Engine(folder, audit=False) as engine:
        yield engine


@pytest.mark.parametrize(
    "options",
    [
        {"tool_choice": "required"},
        {"tool_choice": {"name": "get_time"}},
        {"parallel_tool_calls": False},
    ],
)
def test_a_format_that_cannot_be_enforced_is_refused(
    pythonic_engine: mlxnb.Engine, options: dict[str, Any]
) -> None:
    assert pythonic_engine.supports_tools
    with pytest.raises(mlxnb.InvalidRequestError, match=r"not supported.*'pythonic'"):
        pythonic_engine.generate(ASK, TOOLS, **options)
    # What needs no grammar still works.
    assert pythonic_engine.generate(ASK, TOOLS, tool_choice="auto", max_tokens=2).usage
    assert pythonic_engine.generate(ASK, TOOLS, tool_choice="none", max_tokens=2).usage
