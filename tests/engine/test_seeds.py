"""Seeds that hold under batching: a seeded request samples the same tokens in any company.

A batch's matrix products may round differently from a lone request's (OpenBLAS, which CI
preloads, does), and a random model's nearly flat distributions turn such differences into
other samples. So the requests here sample from a distribution a logits processor sets from
the position alone: identical logits alone and in any batch, as a real model's peaked ones
nearly are. What is tested is the sampling: a global random state, as MLX has, fails these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb

ASK = [{"role": "user", "content": "Write a sentence about the sea."}]


class Flat:
    """Logits that depend on the position only: 64 likely tokens with fixed weights."""

    stateless = True

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        weights = mx.random.normal((64,), key=mx.random.key(int(tokens.shape[-1])))
        fixed = mx.full(logits.shape, -1e9, dtype=logits.dtype)
        fixed[..., 1000:1064] = weights.astype(logits.dtype)
        return fixed


SAMPLED = {
    "max_tokens": 16,
    "temperature": 1.0,
    "top_p": 0.95,
    "chat_template_kwargs": {"enable_thinking": False},
    "logits_processors": [Flat()],
}


@pytest.fixture(scope="module", params=["batched", "solo"])
def seeded_engine(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    solo = request.param == "solo"
    with mlxnb.load(tiny_model_dir, solo_fast_path=solo, audit=False) as engine:
        yield engine


async def crowd(engine: mlxnb.Engine, seeded_at: int, size: int = 32) -> str:
    """Run ``size`` requests at once; the one at ``seeded_at`` has seed 1234."""

    async def one(i: int) -> str:
        options: dict[str, Any] = dict(SAMPLED)
        if i == seeded_at:
            options["seed"] = 1234
        else:  # the others sample too, unseeded or with seeds of their own
            options["seed"] = None if i % 2 else i
        messages = ASK if i == seeded_at else [{"role": "user", "content": f"Other {i}"}]
        return (await engine.agenerate(messages, **options)).content

    answers = await asyncio.gather(*(one(i) for i in range(size)))
    return answers[seeded_at]


async def test_a_seeded_request_samples_the_same_alone_and_in_any_crowd(
    seeded_engine: mlxnb.Engine,
) -> None:
    alone = (await seeded_engine.agenerate(ASK, seed=1234, **SAMPLED)).content
    assert alone == (await seeded_engine.agenerate(ASK, seed=1234, **SAMPLED)).content
    assert await crowd(seeded_engine, seeded_at=0) == alone
    assert await crowd(seeded_engine, seeded_at=17) == alone  # another arrival order
    other = (await seeded_engine.agenerate(ASK, seed=4321, **SAMPLED)).content
    assert other != alone


async def test_a_lone_seeded_request_keeps_its_tokens_when_others_join(
    seeded_engine: mlxnb.Engine,
) -> None:
    alone = (await seeded_engine.agenerate(ASK, seed=99, **{**SAMPLED, "max_tokens": 40})).content
    pieces: list[str] = []
    late: list[asyncio.Task[mlxnb.Turn]] = []
    async for event in seeded_engine.stream(ASK, seed=99, **{**SAMPLED, "max_tokens": 40}):
        if isinstance(event, mlxnb.ContentDelta):
            pieces.append(event.text)
            if len(pieces) == 4:  # the solo path hands over to the batch here
                late = [
                    asyncio.create_task(seeded_engine.agenerate(ASK, **SAMPLED)) for _ in range(3)
                ]
    await asyncio.gather(*late)
    assert "".join(pieces) == alone


def test_evaluate_seeds_each_row_and_reproduces_the_run(seeded_engine: mlxnb.Engine) -> None:
    prompts = ["Same prompt."] * 4
    options = {
        "max_tokens": 8,
        "temperature": 1.0,
        "progress": False,
        "logits_processors": [Flat()],
    }
    first = mlxnb.evaluate(prompts, model=seeded_engine, seed=5, **options)
    again = mlxnb.evaluate(prompts, model=seeded_engine, seed=5, concurrency=1, **options)
    assert first["content"].tolist() == again["content"].tolist()
    assert first["content"].nunique() > 1  # each row its own derived seed
    other = mlxnb.evaluate(prompts, model=seeded_engine, seed=6, **options)
    assert other["content"].tolist() != first["content"].tolist()
