"""The single-sequence decoder on the real tiny model: its steps, bounds and hand-over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlxnb._engine.solo import SoloDecoder

PROMPT = list(range(200, 230))


class CountingModel:
    """The model, counting its calls (every other attribute passes through)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> tuple[Any, Any]:
    from mlx_lm import load

    model, tokenizer = load(str(tiny_model_dir))
    return model, tokenizer


@pytest.fixture
def decoder(loaded: tuple[Any, Any]) -> Callable[..., tuple[SoloDecoder, CountingModel]]:
    """A greedy decoder over :data:`PROMPT` with a fresh cache, its model counting calls."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    def make(max_tokens: int | None = None) -> tuple[SoloDecoder, CountingModel]:
        model = CountingModel(loaded[0])
        solo = SoloDecoder(
            model,
            make_prompt_cache(loaded[0]),
            PROMPT,
            PROMPT,
            make_sampler(temp=0.0),
            [],
            mx.default_stream(mx.default_device()),
            prefill_step=512,
            max_tokens=max_tokens,
        )
        return solo, model

    return make


def decode(solo: SoloDecoder, tokens: int) -> list[int]:
    """Advance ``solo`` until it has generated ``tokens`` tokens; they are returned."""
    out: list[int] = []
    while len(out) < tokens:
        out += solo.advance()
    return out


def cache_length(solo: SoloDecoder) -> int:
    return int(solo.cache[0].offset)


def test_no_step_is_computed_past_the_last_token(decoder: Callable[..., Any]) -> None:
    bounded, bounded_model = decoder(max_tokens=5)
    free, free_model = decoder()
    assert decode(bounded, 5) == decode(free, 5)
    # One prefill call (all of the prompt but its last token), then one call per token: the
    # unbounded decoder has already queued a sixth.
    assert bounded_model.calls == 1 + 5
    assert free_model.calls == 1 + 6
    # The last token was never fed: the cache holds what precedes it, as ``held`` says.
    assert bounded.held == bounded.tokens[:-1]
    assert cache_length(bounded) == len(bounded.held) == len(PROMPT) + 4
    assert cache_length(free) == len(free.held) == len(PROMPT) + 5


def test_a_bounded_decoder_that_goes_on_gives_the_unbounded_decoders_tokens(
    decoder: Callable[..., Any],
) -> None:
    bounded, _ = decoder(max_tokens=3)
    free, _ = decoder()
    assert decode(bounded, 8) == decode(free, 8)


def test_handing_over_after_the_last_token_feeds_it_first(decoder: Callable[..., Any]) -> None:
    bounded, _ = decoder(max_tokens=4)
    generated = decode(bounded, 4)
    ahead, feed, cache, held = bounded.hand_over()
    assert ahead is None  # nothing computed ahead: no token for the caller to deliver
    assert feed == generated[-1:]
    assert held == PROMPT + generated[:-1]
    assert int(cache[0].offset) == len(held)
