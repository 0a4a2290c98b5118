"""Several samples of one prompt prefill it once: followers start from the leader's prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb
from mlxnb._engine.request import RequestMeta

LONG = [{"role": "user", "content": "Summarise this text please. " * 40}]
GREEDY = {"max_tokens": 6, "temperature": 0.0}


@pytest.fixture
def fresh(tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    """An engine with an empty prompt cache and a small prefill step (several chunks)."""
    with mlxnb.load(tiny_model_dir, audit=False, prefill_step=32, name="forks") as engine:
        yield engine


async def samples(engine: mlxnb.Engine, n: int, group: str | None, **options: Any) -> list[Any]:
    meta = RequestMeta(sample_group=group)
    return list(
        await asyncio.gather(
            *(engine.agenerate(LONG, meta=meta, **{**GREEDY, **options}) for _ in range(n))
        )
    )


async def test_the_samples_of_a_prompt_prefill_it_once(fresh: mlxnb.Engine) -> None:
    turns = await samples(fresh, 4, "prompt-1")
    prompt = turns[0].usage.prompt_tokens
    cached = sorted(turn.usage.cached_tokens for turn in turns)
    assert prompt > 64 and cached == [0, prompt - 1, prompt - 1, prompt - 1]
    # Greedy: every sample is the answer a lone request gives.
    assert len({turn.content for turn in turns}) == 1


async def test_without_a_group_each_prefills_its_own(fresh: mlxnb.Engine) -> None:
    turns = await samples(fresh, 3, None)
    assert [turn.usage.cached_tokens for turn in turns] == [0, 0, 0]


def exploding(tokens: Any, logits: Any) -> Any:
    raise RuntimeError("boom")


async def test_twins_still_finish_when_the_leader_fails_or_is_cancelled(
    fresh: mlxnb.Engine,
) -> None:
    meta = RequestMeta(sample_group="prompt-2")
    leader = asyncio.ensure_future(
        fresh.agenerate(LONG, meta=meta, logits_processors=[exploding], **GREEDY)
    )
    await asyncio.sleep(0)  # the leader is submitted first
    twins = [asyncio.ensure_future(fresh.agenerate(LONG, meta=meta, **GREEDY)) for _ in range(2)]
    with pytest.raises(mlxnb.GenerationError):
        await leader
    finished = await asyncio.gather(*twins)
    assert all(turn.finish_reason == "length" for turn in finished)


def test_evaluate_n_prefills_each_prompt_once(fresh: mlxnb.Engine) -> None:
    prompts = ["Tell me a story about a lighthouse. " * 20, "And another about a ship. " * 20]
    frame = mlxnb.evaluate(prompts, model=fresh, n=3, max_tokens=4, progress=False)
    assert frame["error"].isna().all()
    for _, group in frame.groupby("prompt"):
        prompt = int(group["prompt_tokens"].iloc[0])
        assert sorted(group["cached_tokens"]) == [0, prompt - 1, prompt - 1]


async def test_samples_waiting_for_their_leader_count_against_the_kv_budget(
    fresh: mlxnb.Engine, tiny_model_dir: Path
) -> None:
    prompt = fresh.generate(LONG, max_tokens=1).usage.prompt_tokens
    per_token = 512  # the tiny model's KV bytes per token
    budget = per_token * (prompt + GREEDY["max_tokens"]) * 2  # room for two samples at once
    log: list[tuple[int, Any]] = []

    async def sample(engine: mlxnb.Engine, index: int) -> None:
        meta = RequestMeta(sample_group="budgeted")
        async for event in engine.stream(LONG, meta=meta, **GREEDY):
            log.append((index, event))

    with mlxnb.load(tiny_model_dir, audit=False, kv_budget_bytes=budget, name="b") as engine:
        await asyncio.gather(*(sample(engine, i) for i in range(3)))
    done = [i for i, (_, event) in enumerate(log) if isinstance(event, mlxnb.Done)]
    # Prompts render off the loop, so which sample is admitted last is not fixed.
    last_to_start = max(min(i for i, (who, _) in enumerate(log) if who == n) for n in range(3))
    # The last sample started only when one of the first two had ended.
    assert last_to_start > done[0]
