"""Replay from the audit log: recorded requests asked again, answers side by side."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import mlxnb
from mlxnb import scorers
from mlxnb.testing import forced_output, tiny_model

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def recorded(tiny_model_dir: Path, tmp_path: Path) -> Iterator[tuple[mlxnb.Engine, mlxnb.AuditLog]]:
    audit = mlxnb.AuditLog(tmp_path / "audit.sqlite3")
    with mlxnb.load(tiny_model_dir, audit=audit, name="old-model") as engine:
        yield engine, audit
    audit.close()


def test_a_turn_s_request_is_recorded(recorded: tuple[mlxnb.Engine, mlxnb.AuditLog]) -> None:
    engine, audit = recorded
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    engine.generate(messages, [WEATHER], False, max_tokens=3, temperature=0.5)
    row = audit.df.iloc[-1]
    asked = json.loads(row["request"])
    assert asked["messages"] == messages and asked["tools"] == [WEATHER]
    assert asked["enable_thinking"] is False and asked["prompt"] is None
    assert json.loads(row["sampling"])["temperature"] == 0.5


def test_without_content_logging_no_request_is_kept(tiny_model_dir: Path) -> None:
    with (
        mlxnb.AuditLog(":memory:", log_content=False) as audit,
        mlxnb.load(tiny_model_dir, audit=audit) as engine,
    ):
        engine.generate([{"role": "user", "content": "secret"}], max_tokens=2)
        assert audit.df["request"].isna().all()


def test_replay_asks_again_and_sets_the_answers_side_by_side(
    recorded: tuple[mlxnb.Engine, mlxnb.AuditLog],
) -> None:
    engine, audit = recorded
    questions = ["First question?", "Second question?"]
    for question in questions:
        force = forced_output(engine.tokenizer, f"Old answer to {question}")
        engine.generate([{"role": "user", "content": question}], logits_processors=[force])
    old = audit.df
    with mlxnb.load(tiny_model(seed=3), audit=False, name="new-model") as newer:
        result = mlxnb.replay(
            old,
            model=newer,
            scorers={"says_old": scorers.contains("Old answer")},
            progress=False,
            max_tokens=5,
            temperature=0.0,
        )
    assert result["request_id"].tolist() == old["request_id"].tolist()
    assert result["content_old"].tolist() == [f"Old answer to {q}" for q in questions]
    assert result["model_old"].tolist() == ["old-model"] * 2
    assert result["model"].tolist() == ["new-model"] * 2
    assert result["error"].isna().all() and (result["completion_tokens"] == 5).all()
    assert result["says_old_old"].tolist() == [True, True]
    assert result["says_old"].tolist() == [False, False]
    # The replayed rows asked what was asked: their messages are the recorded ones.
    assert [m[-1]["content"] for m in result["messages"]] == questions


def test_rows_without_requests_are_refused(tiny_model_dir: Path) -> None:
    frame = pd.DataFrame({"request_id": ["x"], "request": [None]})
    with pytest.raises(mlxnb.InvalidRequestError, match="no request to replay"):
        mlxnb.replay(frame, model=tiny_model_dir)
