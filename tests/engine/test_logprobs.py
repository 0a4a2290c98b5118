"""Log-probabilities of generated tokens: real mlx-lm, every decoding path, a reference pass."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import pandas as pd
import pytest

import mlxnb
from mlxnb.events import TokenLogprob
from mlxnb.testing import forced_output, tiny_vision_model

HI = [{"role": "user", "content": "Tell me about lighthouses."}]
NO_THINKING = {"enable_thinking": False}


@pytest.fixture(scope="module", params=["batched", "solo"])
def engine_path(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    """The engine with a lone request decoded in the batch, or on its own."""
    solo = request.param == "solo"
    with mlxnb.load(tiny_model_dir, solo_fast_path=solo, audit=False) as engine:
        yield engine


def test_a_forced_token_has_log_probability_zero(engine_path: mlxnb.Engine) -> None:
    script = "Forced, every word."
    force = forced_output(engine_path.tokenizer, script)
    turn = engine_path.generate(HI, logits_processors=[force], top_logprobs=2)
    assert turn.content == script
    assert len(turn.logprobs) == turn.usage.completion_tokens
    assert all(entry.logprob == 0.0 for entry in turn.logprobs)
    assert all(entry.top_logprobs[0].id == entry.id for entry in turn.logprobs)
    assert "".join(entry.token for entry in turn.logprobs[:-1]) == script  # then end-of-turn


def reference_logprobs(model_dir: Path, tokenizer: Any, ids: list[int]) -> list[float]:
    """Each generated token's log-probability from one forward pass over prompt and answer."""
    import mlx_lm

    model, _ = mlx_lm.load(str(model_dir))
    prompt = tokenizer.apply_chat_template(HI, add_generation_prompt=True, **NO_THINKING)
    logits = model(mx.array([*prompt, *ids])[None])[0]
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    rows = logprobs[len(prompt) - 1 : len(prompt) - 1 + len(ids)]
    return [float(rows[i, token].item()) for i, token in enumerate(ids)]


@pytest.mark.parametrize("lookup", [0, 4], ids=["plain", "prompt-lookup"])
def test_log_probabilities_match_one_reference_forward_pass(
    engine_path: mlxnb.Engine, tiny_model_dir: Path, lookup: int
) -> None:
    turn = engine_path.generate(
        HI,
        max_tokens=24,
        temperature=0.0,
        top_logprobs=5,
        prompt_lookup=lookup,
        chat_template_kwargs=NO_THINKING,
    )
    ids = [entry.id for entry in turn.logprobs]
    expected = reference_logprobs(tiny_model_dir, engine_path.tokenizer, ids)
    assert [entry.logprob for entry in turn.logprobs] == pytest.approx(expected, abs=1e-4)
    for entry in turn.logprobs:
        ranked = [alternative.logprob for alternative in entry.top_logprobs]
        assert len(ranked) == 5 and ranked == sorted(ranked, reverse=True)
        assert entry.top_logprobs[0].id == entry.id  # greedy: the chosen token is the top one
        assert math.fsum(math.exp(value) for value in ranked) <= 1 + 1e-6


async def test_the_stream_carries_one_event_per_token(engine_path: mlxnb.Engine) -> None:
    events = [
        event
        async for event in engine_path.stream(
            HI, max_tokens=6, logprobs=True, chat_template_kwargs=NO_THINKING
        )
    ]
    entries = [event for event in events if isinstance(event, TokenLogprob)]
    done = events[-1]
    assert isinstance(done, mlxnb.Done) and len(entries) == done.usage.completion_tokens == 6
    assert all(entry.top_logprobs == () for entry in entries)


def test_nothing_is_computed_unless_asked(engine_path: mlxnb.Engine) -> None:
    assert engine_path.generate(HI, max_tokens=3).logprobs == ()


@pytest.mark.parametrize("top", [-1, 21, 1.5])
def test_top_logprobs_out_of_range_is_refused(engine_path: mlxnb.Engine, top: Any) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="top_logprobs"):
        engine_path.generate(HI, top_logprobs=top)


def test_a_vision_model_refuses_logprobs() -> None:
    with (
        mlxnb.load(tiny_vision_model(), audit=False) as vision,
        pytest.raises(mlxnb.InvalidRequestError, match="logprobs are for text models"),
    ):
        vision.generate(HI, logprobs=True)


def test_evaluate_adds_log_probability_columns(engine_path: mlxnb.Engine) -> None:
    frame = mlxnb.evaluate(
        ["one", "two", "three"], model=engine_path, logprobs=True, max_tokens=5, progress=False
    )
    assert frame["error"].isna().all()
    assert (frame["min_logprob"] <= frame["mean_logprob"]).all()
    expected = [math.exp(-m) for m in frame["mean_logprob"]]
    assert list(frame["perplexity"]) == pytest.approx(expected)
    assert isinstance(frame["perplexity"].dtype, pd.Float64Dtype)
    plain = mlxnb.evaluate(["one"], model=engine_path, max_tokens=2, progress=False)
    assert "perplexity" not in plain.columns
