"""A generated token's log-probability entry, read from the vector it was sampled from."""

from __future__ import annotations

from typing import Any, cast

from mlxnb.events import TokenLogprob, TopLogprob


def token_logprob(
    tokenizer: Any, token: int, logprobs: Any, top: int, reasoning: bool = False
) -> TokenLogprob:
    """The :class:`~mlxnb.events.TokenLogprob` of ``token`` (on the worker thread: reads MLX).

    Args:
        tokenizer: mlx-lm's ``TokenizerWrapper`` (token texts).
        token: The generated token id.
        logprobs: The log-probabilities it was sampled from (any shape holding one vocabulary).
        top: How many of the most likely tokens to list (0: none).
        reasoning: Whether the token is part of a thinking block.
    """
    import mlx.core as mx

    row = logprobs.reshape(-1)
    alternatives: tuple[TopLogprob, ...] = ()
    if top:
        ids = mx.argpartition(-row, kth=top - 1)[:top]
        chosen = cast("list[int]", ids.tolist())
        values = cast("list[float]", row[ids].tolist())
        ranked = sorted(zip(chosen, values, strict=True), key=lambda pair: -pair[1])
        alternatives = tuple(TopLogprob(tokenizer.decode([i]), i, v) for i, v in ranked)
    logprob = float(row[token].item())
    return TokenLogprob(tokenizer.decode([token]), token, logprob, alternatives, reasoning)
