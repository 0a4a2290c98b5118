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
