"""Per-request sampling pieces: shared samplers and guarded logits processors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class ProcessorGuard:
    """Keeps one request's failing logits processor from failing the whole batch.

    Each of a request's processors is wrapped: an exception is remembered (and the logits are
    passed through), and the worker then fails that request alone after the step.
    """

    def __init__(self) -> None:
        self.failure: BaseException | None = None

    def wrap(self, processor: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """Return ``processor`` guarded by this request's failure slot."""

        def guarded(tokens: Any, logits: Any) -> Any:
            if self.failure is not None:
                return logits
            try:
                return processor(tokens, logits)
            except Exception as error:  # reported to this request only, after the step
                self.failure = error
                return logits

        return guarded


@functools.lru_cache(maxsize=64)
def shared_sampler(temperature: float, top_p: float, min_p: float, top_k: int) -> Any:
    """One sampler object per setting, so requests that share it are sampled in one call."""
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temperature, top_p, min_p, top_k=top_k)


_MASK = (1 << 64) - 1


def _mix(seed: int, position: int) -> int:
    """A 64-bit seed for ``position`` of a request seeded with ``seed`` (splitmix64's finaliser).

    Neighbouring seeds and positions give unrelated keys.
    """
    value = (seed * 0x9E3779B97F4A7C15 + position + 1) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


class SeededSampler:
    """A request's own sampler: a random key per generated position, derived from its seed.

    MLX's random state is global, so a seed set when a request starts only reproduces it while
    it runs alone. Here every position draws with its own key, so the request samples the same
    tokens alone, beside other requests, or in another arrival order. It is called once per
    position (the batch decoders sample its row on its own; speculative drafting is off for it).

    Args:
        seed: The request's seed.
        temperature: Above 0.
        top_p: Nucleus mass (1.0: off).
        min_p: Relative probability floor (0: off).
        top_k: Keep the k most likely (0: off).
    """

    def __init__(self, seed: int, temperature: float, top_p: float, min_p: float, top_k: int):
        from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

        filters: list[Callable[[Any], Any]] = []
        if 0 < top_p < 1.0:
            filters.append(lambda x: apply_top_p(x, top_p))
        if min_p != 0.0:
            filters.append(lambda x: apply_min_p(x, min_p))
        if top_k > 0:
            filters.append(lambda x: apply_top_k(x, top_k))
        self._filters = filters
        self._seed = seed
        self._scale = 1 / temperature
        self._position = 0

    def __call__(self, logprobs: Any) -> Any:
        """Sample the next position's token from ``logprobs`` (one row)."""
        import mlx.core as mx

        for keep in self._filters:
            logprobs = keep(logprobs)
        key = mx.random.key(_mix(self._seed, self._position))
        self._position += 1
        return mx.random.categorical(logprobs * self._scale, key=key)
