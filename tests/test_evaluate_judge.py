"""LLM-as-judge: a second model grades evaluated rows (real model; a fake at the seam we own)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mlxnb
from mlxnb import scorers
from mlxnb._evaluate_judge import grade
from mlxnb.testing import FakeEngine, fake_reply

RUBRIC = "5 = names the right capital, 1 = does not."


def test_a_judge_grades_every_row_with_a_second_model(engine: mlxnb.Engine) -> None:
    questions = pd.DataFrame(
        {"prompt": ["Capital of France?", "Capital of Peru?"], "expected": ["Paris", "Lima"]}
    )
    frame = mlxnb.evaluate(
        questions,
        model=engine,
        scorers={"grade": scorers.judge(engine, RUBRIC, scale=(1, 5))},
        max_tokens=4,
        progress=False,
    )
    # The random model writes gibberish, but the schema holds it to a score on the scale.
    assert frame["grade"].between(1, 5).all()
    assert frame["grade_reasoning"].map(lambda text: isinstance(text, str)).all()
    assert (frame["grade_reasoning"].str.len() <= 600).all()


def test_the_judge_sees_rubric_question_reference_and_answer() -> None:
    judge = scorers.judge("any", RUBRIC)
    row = {"prompt": "Capital of France?", "expected": "Paris", "content": "It is Paris."}
    system, user = judge.messages(row)
    assert system["role"] == "system" and "JSON" in system["content"]
    for part in (RUBRIC, "Capital of France?", "Reference answer:\nParis", "It is Paris."):
        assert part in user["content"]
    assert judge.schema["properties"]["score"] == {"enum": [1, 2, 3, 4, 5]}


def test_grades_are_parsed_and_failures_recorded_per_row() -> None:
    fake = FakeEngine(
        [
            fake_reply(json.dumps({"reasoning": "Right.", "score": 5})),
            fake_reply("not json"),
        ]
    )
    rows: list[dict[str, Any]] = [
        {"prompt": "a", "content": "x", "error": None},
        {"prompt": "b", "content": "y", "error": None},
        {"prompt": "c", "content": None, "error": "RuntimeError: boom"},
    ]
    asyncio.run(grade(scorers.judge("fake", RUBRIC), rows, fake, concurrency=1, run_id="r"))
    assert (rows[0]["judge"], rows[0]["judge_reasoning"]) == (5, "Right.")
    assert rows[1]["judge"] is None and "the judge failed" in rows[1]["judge_reasoning"]
    assert (rows[2]["judge"], rows[2]["judge_reasoning"]) == (None, None)  # not graded
    assert len(fake.calls) == 2


def test_a_judge_is_not_a_row_scorer_and_checks_its_scale() -> None:
    with pytest.raises(TypeError, match=r"inside mlxnb\.evaluate"):
        scorers.judge("any", RUBRIC)({"content": "x"})
    with pytest.raises(ValueError, match="scale"):
        scorers.judge("any", RUBRIC, scale=(5, 1))


def test_a_grade_is_asked_once_while_what_it_grades_stays_the_same() -> None:
    verdict = fake_reply(json.dumps({"reasoning": "Fine.", "score": 4}))
    fake = FakeEngine([verdict] * 4)
    rows: list[dict[str, Any]] = [
        {"prompt": "a", "content": "x", "error": None},
        {"prompt": "b", "content": "y", "error": None},
    ]
    kept: list[str] = []

    def run(judge: scorers.Judge) -> None:
        asyncio.run(
            grade(judge, rows, fake, 2, "r", model="m", keep=lambda row: kept.append(row["prompt"]))
        )

    run(scorers.judge("fake", RUBRIC))
    assert len(fake.calls) == 2 and sorted(kept) == ["a", "b"]
    run(scorers.judge("fake", RUBRIC))  # as a resumed run: nothing new to grade
    assert len(fake.calls) == 2 and [row["judge"] for row in rows] == [4, 4]
    rows[1]["content"] = "z"  # another answer: graded again, and only it
    run(scorers.judge("fake", RUBRIC))
    assert len(fake.calls) == 3 and kept[-1] == "b"
    run(scorers.judge("fake", "Another rubric."))  # another question to the judge: all again
    assert len(fake.calls) == 5


def test_a_resumed_run_grades_only_what_its_checkpoint_lacks(
    engine: mlxnb.Engine, tmp_path: Path
) -> None:
    questions = pd.DataFrame({"prompt": ["Capital of France?", "Capital of Peru?"]})
    checkpoint = tmp_path / "run.jsonl"
    options: dict[str, Any] = {
        "model": engine,
        "scorers": {"grade": scorers.judge(engine, RUBRIC)},
        "max_tokens": 4,
        "progress": False,
        "checkpoint": checkpoint,
    }
    first = mlxnb.evaluate(questions, **options)
    lines = checkpoint.read_text().splitlines()
    assert len(lines) == 4  # two answers, then two grades
    served = engine.requests_served
    again = mlxnb.evaluate(questions, **options)
    assert engine.requests_served == served  # neither answered nor graded again
    assert again["grade"].tolist() == first["grade"].tolist()
    assert not any(column.startswith("_graded") for column in again.columns)
    # Stopped after one grade: the other row is graded, the first is not asked again.
    checkpoint.write_text("\n".join(lines[:3]) + "\n")
    resumed = mlxnb.evaluate(questions, **options)
    assert engine.requests_served == served + 1
    assert resumed["grade"].notna().all()
