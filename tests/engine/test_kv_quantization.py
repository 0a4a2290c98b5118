"""kv_bits: quantised KV caches on the single-sequence path, one request at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb
from mlxnb._engine.kv_quantization import KvQuantization
from mlxnb._engine.memory import KvFootprint
from mlxnb.errors import InvalidRequestError, KvBudgetError, ModelLoadError
from mlxnb.testing import tiny_model

PROMPT = [(7 * i * i + 13) % 1000 + 10 for i in range(50)]  # token ids: no chat template
TOKENS = 12


PER_TOKEN = 1024  # 2 layers x 2 KV heads x 32 dims x (K, V) x 4 bytes


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The tiny model with heads wide enough to quantise (a multiple of the group size)."""
    return tiny_model(head_dim=32)


@pytest.fixture(scope="module")
def quantized(model_dir: Path) -> Iterator[mlxnb.Engine]:
    with mlxnb.Engine(
        model_dir, audit=False, kv_bits=4, kv_group_size=32, quantized_kv_start=8
    ) as engine:
        yield engine


def reference(model_dir: Path, **quantization: Any) -> list[tuple[int, float]]:
    """Greedy tokens and their log-probabilities from mlx-lm's own loop, same KV settings."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    model, _ = load(str(model_dir))
    steps = generate_step(mx.array(PROMPT), model, max_tokens=TOKENS, **quantization)
    return [(int(token), float(logprobs[int(token)])) for token, logprobs in steps]


def test_greedy_decoding_matches_mlx_lms_quantised_loop(
    quantized: mlxnb.Engine, model_dir: Path
) -> None:
    turn = quantized.generate([], prompt=PROMPT, max_tokens=TOKENS, temperature=0.0, logprobs=True)
    ours = [(entry.id, entry.logprob) for entry in turn.logprobs]
    expected = reference(model_dir, kv_bits=4, kv_group_size=32, quantized_kv_start=8)
    plain = reference(model_dir)
    assert [token for token, _ in ours] == [token for token, _ in expected]
    assert [lp for _, lp in ours] == pytest.approx([lp for _, lp in expected], abs=1e-4)
    # Quantising changed the numbers: the comparison above is not one with plain decoding.
    assert [lp for _, lp in plain] != pytest.approx([lp for _, lp in expected], abs=1e-4)


def test_the_stored_cache_is_quantised(quantized: mlxnb.Engine) -> None:
    from mlx_lm.models.cache import QuantizedKVCache

    quantized.generate([], prompt=PROMPT[:20], max_tokens=4, temperature=0.0)
    worker = quantized._worker
    cache, rest = worker.ask(
        lambda: worker._cache.fetch_nearest_cache(quantized.model_id, PROMPT[:20]), timeout=10
    )
    assert cache is not None and len(rest) < 20
    assert all(isinstance(layer, QuantizedKVCache) for layer in cache)


async def test_requests_run_one_at_a_time(quantized: mlxnb.Engine) -> None:
    order: list[tuple[int, str]] = []

    async def ask(index: int) -> None:
        stream = quantized.stream([], prompt=PROMPT[index:], max_tokens=6, temperature=0.0)
        async for event in stream:
            order.append((index, type(event).__name__))

    await asyncio.gather(*(ask(i) for i in range(3)))
    owners = [index for index, _ in order]
    # Each request's events come together: the next starts when the one before it is done.
    assert owners == sorted(owners, key=owners.index)
    assert len({index for index, _ in order}) == 3


def test_the_kv_budget_counts_quantised_bytes() -> None:
    footprint = KvFootprint(per_token=512, quantized_per_token=144, quantized_start=100)
    assert footprint.sequence_bytes(50) == 50 * 512
    # Past the start both copies exist while the cache is converted.
    assert footprint.sequence_bytes(1000) == 100 * 512 + 1000 * 144
    assert footprint.sequence_bytes(1000) < KvFootprint(512).sequence_bytes(1000)


def test_a_context_that_fits_only_quantised_is_admitted(model_dir: Path) -> None:
    budget = PER_TOKEN * 300  # 300 tokens of full-precision KV
    ask: dict[str, Any] = {"prompt": list(range(10, 40)), "max_tokens": 400, "temperature": 0}
    with (
        mlxnb.Engine(model_dir, audit=False, kv_budget_bytes=budget) as plain,
        pytest.raises(KvBudgetError),
    ):
        plain.generate([], **ask)
    with mlxnb.Engine(
        model_dir,
        audit=False,
        kv_budget_bytes=budget,
        kv_bits=4,
        kv_group_size=32,
        quantized_kv_start=0,
    ) as small:
        assert small.memory().kv_bytes_per_token == PER_TOKEN
        assert small.generate([], **ask).usage.completion_tokens == 400


def test_a_group_size_the_heads_cannot_take_is_refused_at_load(tiny_model_dir: Path) -> None:
    with pytest.raises((InvalidRequestError, ModelLoadError), match="kv_group_size=32"):
        mlxnb.Engine(tiny_model_dir, audit=False, kv_bits=4, kv_group_size=32)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bits": 7}, "kv_bits must be one of"),
        ({"bits": 4, "group_size": 48}, "kv_group_size must be one of"),
        ({"bits": 4, "start": -1}, "quantized_kv_start"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        KvQuantization(**options)
