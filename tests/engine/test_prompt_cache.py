"""The in-memory prompt cache: the entry mlx-lm would choose, handed over without a deep copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import (
    KVCache,
    LRUPromptCache,
    RotatingKVCache,
    can_trim_prompt_cache,
    trim_prompt_cache,
)

import mlxnb
from mlxnb._engine.prompt_cache import PromptCache

LAYERS, HEADS, DIM = 3, 2, 4
STORED = [list(range(1, 21)), [1, 2, 3, 4, 5, 50, 51, 52]]
MODEL = "m"


def filled(layer: Any, tokens: int, seed: int) -> Any:
    """``layer`` after ``tokens`` random keys and values were written into it."""
    mx.random.seed(seed)
    keys = mx.random.normal((1, HEADS, tokens, DIM))
    values = mx.random.normal((1, HEADS, tokens, DIM))
    layer.update_and_fetch(keys, values)
    mx.eval(layer.keys, layer.values)
    return layer


KINDS: dict[str, Callable[[], Any]] = {
    "plain": KVCache,
    "rotating": lambda: RotatingKVCache(max_size=64),
    # Past its window: it cannot be trimmed, so neither a longer entry nor an exact hit serves.
    "rotating-full": lambda: RotatingKVCache(max_size=8),
}


def entry(tokens: list[int], make: Callable[[], Any] = KVCache) -> list[Any]:
    return [filled(make(), len(tokens), seed=len(tokens) * 10 + i) for i in range(LAYERS)]


def stores(make: Callable[[], Any] = KVCache) -> tuple[PromptCache, LRUPromptCache]:
    """Ours and mlx-lm's, holding the same entries (theirs are separate copies)."""
    ours, theirs = PromptCache(16, 1 << 30), LRUPromptCache(max_size=16)
    for tokens in STORED:
        ours.insert_cache(MODEL, tokens, entry(tokens, make))
        theirs.insert_cache(MODEL, tokens, entry(tokens, make))
    return ours, theirs


def held(cache: list[Any]) -> list[tuple[Any, Any]]:
    """Each layer's keys and values up to its offset, evaluated."""
    arrays = [
        (layer.keys[..., : layer.offset, :], layer.values[..., : layer.offset, :])
        for layer in cache
    ]
    mx.eval(arrays)
    return arrays


def same(a: list[tuple[Any, Any]], b: list[tuple[Any, Any]]) -> bool:
    return len(a) == len(b) and all(
        mx.array_equal(ka, kb).item() and mx.array_equal(va, vb).item()
        for (ka, va), (kb, vb) in zip(a, b, strict=True)
    )


QUERIES = {
    "exact hit": list(range(1, 21)),
    "a stored entry is a prefix (shorter)": [*range(1, 21), 99, 98],
    "shares a prefix with a longer entry": [1, 2, 3, 4, 5, 6, 7, 77],
    "shares the start of two entries": [1, 2, 3, 4, 5, 50, 90],
    "nothing in common": [200, 201, 202],
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tokens", QUERIES.values(), ids=QUERIES.keys())
def test_fetch_gives_what_mlx_lm_gives_and_leaves_the_entry_as_it_was(
    tokens: list[int], kind: str
) -> None:
    ours, theirs = stores(KINDS[kind])
    entries_before = {tuple(t): held(ours._lru._trie.get(MODEL, t).prompt_cache) for t in STORED}

    cache, rest = ours.fetch_nearest_cache(MODEL, tokens)
    expected, expected_rest = theirs.fetch_nearest_cache(MODEL, tokens)
    expected_rest = list(expected_rest)
    if expected is not None and not expected_rest:
        # An exact hit: ours keeps all but the last token, whose logits are needed, and does
        # not use a cache that cannot give it back.
        if can_trim_prompt_cache(expected):
            trim_prompt_cache(expected, 1)
            expected_rest = tokens[-1:]
        else:
            expected = None
    if expected is None or all(layer.offset == 0 for layer in expected):
        assert cache is None and rest == tokens
        return
    assert rest == expected_rest
    assert same(held(cache), held(expected))

    # The request writes past the prefix: the stored entries do not change.
    for layer in cache:
        filled(layer, 5, seed=7)
    for stored, before in entries_before.items():
        assert same(held(ours._lru._trie.get(MODEL, list(stored)).prompt_cache), before)


def test_a_plain_cache_is_handed_over_without_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    ours, _ = stores()

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("deep-copied")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    cache, rest = ours.fetch_nearest_cache(MODEL, [1, 2, 3, 4, 5, 6, 7, 77])
    assert rest == [77] and [layer.offset for layer in cache] == [7] * LAYERS


def test_prefix_hits_decode_what_a_cold_engine_decodes(tiny_model_dir: Path) -> None:
    """Real mlx-lm: turns served from trimmed, exact and shorter entries equal cold ones."""
    system = {"role": "system", "content": "You name rivers and nothing else. " * 4}
    first = [system, {"role": "user", "content": "Name a river in France."}]
    turns = [
        first,  # exact: the same prompt again
        [system, {"role": "user", "content": "Name a river in Spain."}],  # a trimmed longer one
        [
            *first,
            {"role": "assistant", "content": "The Loire."},
            {"role": "user", "content": "Another?"},
        ],
    ]
    with mlxnb.load(tiny_model_dir, audit=False) as warm:
        warm.generate(first, max_tokens=8, enable_thinking=False)
        served = [warm.generate(t, max_tokens=8, enable_thinking=False) for t in turns]
    assert all(turn.usage.cached_tokens > 0 for turn in served)
    for messages, turn in zip(turns, served, strict=True):
        with mlxnb.load(tiny_model_dir, audit=False) as cold:
            reference = cold.generate(messages, max_tokens=8, enable_thinking=False)
        assert reference.usage.cached_tokens == 0
        assert turn.content == reference.content


def test_of_many_longer_entries_any_serves_the_shared_prefix() -> None:
    """Conversations sharing only a template's first tokens: the hit is trimmed to those."""
    ours = PromptCache(32, 1 << 30)
    head = [7, 8, 9]
    stored = [[*head, *range(100 * i, 100 * i + 12)] for i in range(1, 13)]
    for tokens in stored:
        ours.insert_cache(MODEL, tokens, entry(tokens))
    before = [held(ours._lru._trie.get(MODEL, t).prompt_cache) for t in stored]

    cache, rest = ours.fetch_nearest_cache(MODEL, [*head, 5, 6])
    assert rest == [5, 6] and [layer.offset for layer in cache] == [3] * LAYERS
    prefixes = [[(k[..., :3, :], v[..., :3, :]) for k, v in layers] for layers in before]
    assert any(same(held(cache), prefix) for prefix in prefixes)
    for layer in cache:
        filled(layer, 4, seed=3)
    for tokens, layers in zip(stored, before, strict=True):
        assert same(held(ours._lru._trie.get(MODEL, tokens).prompt_cache), layers)
