"""evaluate(): many prompts through the real engine into a DataFrame."""

from __future__ import annotations

import _thread
import asyncio
import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mlxnb
from mlxnb import scorers
from mlxnb._evaluate import aevaluate, evaluate
from mlxnb.testing import forced_output, tiny_model


def forced_by(engine: mlxnb.Engine, column: str = "reply") -> Any:
    """Per-row options: force each row's reply from one of its columns."""

    def options(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"logits_processors": [forced_output(engine.tokenizer, str(row[column]))]}

    return options


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt": ["capital of France?", "2+2?", "json please", "pick a colour"],
            "reply": ["Paris.", "The answer is 4", '{"ok": true}', "```json\n[1, 2]\n```"],
            "expected": ["paris.", "4", "nope", "blue"],
        }
    )


def test_strings_give_typed_columns_in_input_order(engine: mlxnb.Engine) -> None:
    replies = {"first": "One.", "second": "Two, longer.", "third": "3"}
    frame = evaluate(
        list(replies),
        model=engine,
        progress=False,
        row_options=lambda row: {
            "logits_processors": [forced_output(engine.tokenizer, replies[row["prompt"]])]
        },
    )
    assert list(frame["prompt"]) == list(replies)
    assert list(frame["content"]) == list(replies.values())
    assert list(frame["finish_reason"]) == ["stop"] * 3
    assert str(frame["content"].dtype) == "string"
    assert str(frame["completion_tokens"].dtype) == "Int64"
    assert str(frame["duration"].dtype) == "Float64"
    assert frame["error"].isna().all()
    assert (frame["prompt_tokens"] > 0).all()
    assert frame.attrs["run_id"].startswith("eval-")


def test_dataframe_columns_are_kept_and_scored(engine: mlxnb.Engine, table: pd.DataFrame) -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    frame = evaluate(
        table,
        model=engine,
        progress=False,
        row_options=forced_by(engine),
        scorers=[
            scorers.exact_match(),
            scorers.contains(),
            scorers.regex(r"\d"),
            scorers.json_valid(),
            scorers.json_schema_valid(schema),
        ],
    )
    assert list(frame["expected"]) == list(table["expected"])
    assert list(frame["exact_match"]) == [1.0, 0.0, 0.0, 0.0]
    assert list(frame["contains"]) == [1.0, 1.0, 0.0, 0.0]
    assert list(frame["regex"]) == [0.0, 1.0, 0.0, 1.0]
    assert list(frame["json_valid"]) == [0.0, 0.0, 1.0, 1.0]
    assert list(frame["json_schema_valid"]) == [0.0, 0.0, 0.0, 1.0]


def test_custom_scorers_by_name(engine: mlxnb.Engine, table: pd.DataFrame) -> None:
    frame = evaluate(
        table,
        model=engine,
        progress=False,
        row_options=forced_by(engine),
        scorers={"length": lambda row: len(row["content"])},
    )
    assert list(frame["length"]) == [len(r) for r in table["reply"]]


def test_failing_row_records_error_and_run_continues(engine: mlxnb.Engine) -> None:
    prompts: list[Any] = [
        [{"role": "user", "content": "fine"}],
        [],
        [{"role": "user", "content": "ok"}],
    ]
    frame = evaluate(prompts, model=engine, progress=False, max_tokens=3)
    assert frame["error"].isna().tolist() == [True, False, True]
    assert "InvalidRequestError" in frame["error"][1]
    assert frame["completion_tokens"].tolist()[0] == 3


def test_system_prompt_and_samples(engine: mlxnb.Engine) -> None:
    plain = evaluate(["hi"], model=engine, progress=False, max_tokens=1)
    framed = evaluate(
        ["hi"],
        model=engine,
        progress=False,
        max_tokens=2,
        n=3,
        system="You are a terse assistant who answers in one word.",
    )
    assert list(framed["sample"]) == [0, 1, 2]
    assert framed["prompt_tokens"].iloc[0] > plain["prompt_tokens"].iloc[0]


@pytest.fixture(scope="module")
def second_engine() -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_model(seed=1), audit=False) as other:
        yield other


def test_models_and_grid_give_a_long_frame(
    engine: mlxnb.Engine, second_engine: mlxnb.Engine
) -> None:
    frame = evaluate(
        ["a", "b"],
        model=[engine, second_engine],
        grid={"temperature": [0.0, 0.9]},
        progress=False,
        max_tokens=4,
        seed=3,
    )
    assert len(frame) == 2 * 2 * 2
    assert set(frame["model"]) == {engine.model_id, second_engine.model_id}
    assert sorted(set(frame["temperature"])) == [0.0, 0.9]
    greedy = frame[frame["temperature"] == 0.0]
    by_model = greedy.groupby("model")["content"].apply(tuple)
    assert by_model[engine.model_id] != by_model[second_engine.model_id]


async def test_resume_after_cancellation_skips_finished_rows(
    engine: mlxnb.Engine, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "run.jsonl"
    prompts = [f"prompt {i}" for i in range(6)]
    ran: list[str] = []

    def options(row: Mapping[str, Any]) -> dict[str, Any]:
        ran.append(row["prompt"])
        slow = row["prompt"] != "prompt 0"
        text = "word " * (400 if slow else 2)
        return {"logits_processors": [forced_output(engine.tokenizer, text)], "max_tokens": 500}

    task = asyncio.create_task(
        aevaluate(
            prompts,
            model=engine,
            progress=False,
            concurrency=2,
            checkpoint=checkpoint,
            row_options=options,
        )
    )
    while not checkpoint.exists():
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finished = [json.loads(line)["prompt"] for line in checkpoint.read_text().splitlines()]
    assert "prompt 0" in finished and len(finished) < len(prompts)
    first_run_id = json.loads(checkpoint.read_text().splitlines()[0])["run_id"]

    ran.clear()
    frame = await aevaluate(
        prompts,
        model=engine,
        progress=False,
        concurrency=4,
        checkpoint=checkpoint,
        max_tokens=3,
        row_options=lambda row: ran.append(row["prompt"]) or {},
    )
    assert list(frame["prompt"]) == prompts
    assert ran and set(finished).isdisjoint(ran)
    assert len(checkpoint.read_text().splitlines()) == len(prompts)
    assert set(frame["run_id"]) == {first_run_id}


def test_ctrl_c_returns_finished_rows(engine: mlxnb.Engine, tmp_path: Path) -> None:
    checkpoint = tmp_path / "interrupted.jsonl"

    def interrupt_after_first_row() -> None:
        while not checkpoint.exists():
            time.sleep(0.02)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_after_first_row, daemon=True).start()
    prompts = ["quick", *[f"slow {i}" for i in range(4)]]
    with pytest.warns(UserWarning, match="interrupted"):
        frame = evaluate(
            prompts,
            model=engine,
            progress=False,
            concurrency=2,
            checkpoint=checkpoint,
            row_options=lambda row: {
                "logits_processors": [
                    forced_output(
                        engine.tokenizer, "done" if row["prompt"] == "quick" else "x " * 3000
                    )
                ],
                "max_tokens": 5000,
            },
        )
    assert frame.attrs["interrupted"] is True
    assert "quick" in set(frame["prompt"]) and len(frame) < len(prompts)
    assert engine.pending == 0 or _settles(engine)


def _settles(engine: mlxnb.Engine) -> bool:
    deadline = time.monotonic() + 5
    while engine.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    return engine.pending == 0


def test_prompts_frame_needs_a_prompt_column(engine: mlxnb.Engine) -> None:
    with pytest.raises(ValueError, match="prompt"):
        evaluate(pd.DataFrame({"question": ["x"]}), model=engine, progress=False)
