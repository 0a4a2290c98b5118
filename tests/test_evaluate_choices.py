"""Multiple-choice evaluation: every choice scored by log-likelihood, on the real tiny model."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import mlxnb

QUESTIONS = pd.DataFrame(
    {
        "prompt": ["The capital of France is", "Two plus two is", "The sky is"],
        "options": [[" Paris", " Rome", " Berlin"], [" four", " five"], [" blue", " green"]],
        "label": [0, " five", 1],
    }
)


def test_each_choice_gets_its_log_likelihood_and_the_best_is_predicted(
    engine: mlxnb.Engine,
) -> None:
    frame = mlxnb.evaluate(
        QUESTIONS, model=engine, choices="options", answer="label", progress=False
    )
    assert frame["error"].isna().all()
    for (_, row), options, label in zip(
        frame.iterrows(), QUESTIONS["options"], [0, 1, 1], strict=True
    ):
        scores = engine.score(row["prompt"], options)
        raw = [row[f"logprob_{i}"] for i in range(len(options))]
        norm = [row[f"logprob_norm_{i}"] for i in range(len(options))]
        assert raw == pytest.approx([s.logprob for s in scores], abs=1e-3)
        assert norm == pytest.approx([s.logprob_per_token for s in scores], abs=1e-3)
        assert row["predicted"] == max(range(len(raw)), key=raw.__getitem__)
        assert row["predicted_norm"] == max(range(len(norm)), key=norm.__getitem__)
        assert bool(row["correct"]) == (row["predicted"] == label)
    # The third row has two choices: no third column value.
    assert pd.isna(frame["logprob_2"].iloc[2])


def test_chat_rows_are_scored_after_their_chat_template(engine: mlxnb.Engine) -> None:
    frame = pd.DataFrame(
        {
            "messages": [[{"role": "user", "content": "Say yes or no."}]],
            "options": [["yes", "no"]],
        }
    )
    result = mlxnb.evaluate(frame, model=engine, choices="options", progress=False)
    prompt = engine.tokenizer.apply_chat_template(frame["messages"][0], add_generation_prompt=True)
    scores = engine.score(prompt, ["yes", "no"])
    assert result["logprob_0"].iloc[0] == pytest.approx(scores[0].logprob, abs=1e-3)
    assert "correct" not in result.columns


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"choices": "missing"}, "choices='missing'"),
        ({"choices": "options", "answer": "missing"}, "answer='missing'"),
        ({"answer": "label"}, "pass choices="),
    ],
)
def test_bad_columns_are_refused_before_anything_runs(
    engine: mlxnb.Engine, arguments: dict[str, Any], match: str
) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match=match):
        mlxnb.evaluate(QUESTIONS, model=engine, progress=False, **arguments)


def test_a_row_without_usable_choices_records_its_error(engine: mlxnb.Engine) -> None:
    frame = QUESTIONS.assign(options=[[" Paris"], "not a list", [" blue", ""]])
    result = mlxnb.evaluate(frame, model=engine, choices="options", progress=False)
    assert result["error"].isna().tolist() == [True, False, False]
    assert "list" in result["error"].iloc[1]


def test_the_model_s_own_choice_is_predicted(engine: mlxnb.Engine) -> None:
    # Among one-token choices, the token greedy decoding writes is the most likely one.
    prompt = "The capital of France is"
    turn = engine.generate([], prompt=prompt, max_tokens=1, temperature=0.0, logprobs=True)
    greedy = engine.tokenizer.decode([turn.logprobs[0].id])
    others = [" the", " a", " Paris", " Rome", "\n", " 1"]
    options = [greedy, *[text for text in others if text != greedy][:3]]
    quiz = pd.DataFrame({"prompt": [prompt], "options": [options], "label": [0]})
    frame = mlxnb.evaluate(quiz, model=engine, choices="options", answer="label", progress=False)
    assert frame["predicted"].iloc[0] == 0 and bool(frame["correct"].iloc[0])
