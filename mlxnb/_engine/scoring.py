"""Scoring continuations without decoding: their log-likelihood after a context, prefill only.

What evaluation harnesses call ``loglikelihood``: the context is prefilled once; its KV cache is
copied into a batch, one row per continuation, and one model call reads every continuation
token's log-probability. Nothing is sampled. Runs on the engine's worker thread, between steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from mlxnb._engine.memory import settle_prefill
from mlxnb.errors import InvalidRequestError

BATCH_TOKENS = 1024
"""Most continuation tokens (rows x longest row) one model call reads: bounds the logits."""


@dataclass(frozen=True)
class Score:
    """How likely a continuation is after a context.

    Attributes:
        logprob: Sum of its tokens' log-probabilities (natural log).
        tokens: How many tokens it has.
        greedy: Whether greedy decoding would have produced it (each token the most likely).
    """

    logprob: float
    tokens: int
    greedy: bool

    @property
    def logprob_per_token(self) -> float:
        """The length-normalised log-likelihood: ``logprob / tokens``."""
        return self.logprob / self.tokens


def token_ids(tokenizer: Any, text: str | Sequence[int], *, special: bool) -> list[int]:
    """``text`` encoded (with the tokenizer's special tokens if ``special``), or ids as given.

    Raises:
        InvalidRequestError: Ids that are not whole numbers in the vocabulary.
    """
    if isinstance(text, str):
        return list(tokenizer.encode(text, add_special_tokens=special))
    ids = list(text)
    size = len(tokenizer.get_vocab())
    if not all(isinstance(i, int) and 0 <= i < size for i in ids):
        raise InvalidRequestError(f"token ids must be whole numbers from 0 to {size - 1}")
    return ids


def score_continuations(
    model: Any, context: Sequence[int], continuations: Sequence[Sequence[int]], prefill_step: int
) -> list[Score]:
    """Score each continuation after ``context`` (on the thread that owns MLX).

    Args:
        model: The mlx-lm model.
        context: The context's token ids (at least one).
        continuations: Each continuation's token ids (at least one each).
        prefill_step: Context tokens per model call.

    Raises:
        InvalidRequestError: An empty context or continuation.
    """
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    if not context:
        raise InvalidRequestError("the context must have at least one token")
    if not continuations or any(not c for c in continuations):
        raise InvalidRequestError("every continuation must have at least one token")
    longest = max(len(c) for c in continuations)
    on_gpu = mx.default_device().type == mx.gpu
    if on_gpu and len(continuations) * (len(context) + longest) <= BATCH_TOKENS:
        # Short enough to read in one call, the context repeated in every row: one model call
        # instead of a prefill and a batch, since on a GPU a call's cost is mostly its launch.
        # Not on a CPU: there the vocabulary projection of every context position, which a
        # prefill never computes (its logits are never read), is most of the work.
        return _score_together(model, context, continuations)
    cache = make_prompt_cache(model)
    prefix = list(context[:-1])
    for start in range(0, len(prefix), prefill_step):
        model(mx.array(prefix[start : start + prefill_step])[None], cache=cache)
        settle_prefill(mx, cache)
    shareable = all(type(c) is KVCache for c in cache)
    scores: list[Score] = []
    for group in _groups(continuations):
        if shareable:
            rows = len(group)
            copies = [_copied(c, rows, KVCache) for c in cache] if prefix else None
            scores.extend(_score_rows(model, copies, context[-1], group))
        else:
            # Caches that cannot be copied row by row (sliding windows, recurrent state): each
            # continuation is read after the whole context, one at a time.
            scores.extend(_score_whole(model, context, continuation) for continuation in group)
    return scores


def _groups(continuations: Sequence[Sequence[int]]) -> list[list[Sequence[int]]]:
    groups: list[list[Sequence[int]]] = [[]]
    for continuation in continuations:
        longest = max([len(continuation), *(len(c) for c in groups[-1])])
        if groups[-1] and longest * (len(groups[-1]) + 1) > BATCH_TOKENS:
            groups.append([])
        groups[-1].append(continuation)
    return groups


def _copied(cache: Any, rows: int, kind: type) -> Any:
    import mlx.core as mx

    keys, values = cache.keys_and_values()  # the filled part of its buffers
    copy = kind()
    copy.state = (mx.repeat(keys, rows, axis=0), mx.repeat(values, rows, axis=0), cache.offset)
    return copy


def _score_rows(
    model: Any, cache: Any, last_context_token: int, rows: Sequence[Sequence[int]]
) -> list[Score]:
    """One model call reading each row's tokens after the context (whose KV ``cache`` holds)."""
    inputs = [[last_context_token, *row[:-1]] for row in rows]
    width = max(len(row) for row in inputs)
    padded = [row + [0] * (width - len(row)) for row in inputs]  # right padding: never read
    return _read(model, cache, padded, [(0, list(row)) for row in rows])


def _score_whole(model: Any, context: Sequence[int], continuation: Sequence[int]) -> Score:
    """One model call over context and continuation, without a cache."""
    (score,) = _score_together(model, context, [continuation])
    return score


def _score_together(
    model: Any, context: Sequence[int], continuations: Sequence[Sequence[int]]
) -> list[Score]:
    """One model call, one row per continuation, each row context and continuation."""
    rows = [[*context, *continuation][:-1] for continuation in continuations]
    width = max(len(row) for row in rows)
    padded = [row + [0] * (width - len(row)) for row in rows]  # right padding: never read
    start = len(context) - 1
    return _read(model, None, padded, [(start, list(c)) for c in continuations])


def _read(
    model: Any, cache: Any, inputs: list[list[int]], targets: list[tuple[int, list[int]]]
) -> list[Score]:
    """Run ``inputs`` and read, per row, the log-probability of ``targets`` from its offset.

    All rows are read in one evaluation (one synchronisation, not one per continuation).
    """
    import mlx.core as mx

    logits = model(mx.array(inputs), cache=cache).astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    width = max(len(tokens) for _, tokens in targets)
    rows = mx.arange(len(targets))[:, None]
    positions = mx.array([[start + i for i in range(width)] for start, _ in targets])
    positions = mx.minimum(positions, logits.shape[1] - 1)
    wanted = mx.array([tokens + [0] * (width - len(tokens)) for _, tokens in targets])
    real = mx.array([[i < len(tokens) for i in range(width)] for _, tokens in targets])
    chosen = logprobs[rows, positions, wanted]
    totals = mx.where(real, chosen, 0.0).sum(axis=-1)
    greedy = mx.where(real, mx.argmax(logits, axis=-1)[rows, positions] == wanted, True).all(-1)
    sums = cast("list[float]", totals.tolist())
    flags = cast("list[bool]", greedy.tolist())
    return [
        Score(float(total), len(tokens), bool(flag))
        for total, flag, (_, tokens) in zip(sums, flags, targets, strict=True)
    ]
