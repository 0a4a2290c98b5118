"""Prompt-lookup decoding: a lone request drafts tokens from n-grams it has already seen.

Notebook work copies a lot (editing code, quoting a document, filling a template), so the text
that comes next has often appeared before. After each token the decoder finds the most recent
earlier occurrence of the last few tokens (prompt and answer alike) and drafts the tokens that
followed it; one model call then checks them all. The model samples every position itself and a
draft token is kept only while it equals what the model sampled there, so the output is what
plain decoding would have produced (token for token when greedy), however bad the drafts.

A draft that is rejected costs a wider model call than one token would. On a GPU, where a
small model's step is bound by launch overhead, that is nearly free; on a CPU it is not, which
is why prompt lookup is asked for per request (``prompt_lookup=``), not on by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mlxnb._engine.solo import Processor, SoloDecoder

NGRAM_SIZES = (3, 2)
"""The n-gram lengths looked up, longest first (a one-token match drafts too much noise)."""


class NgramIndex:
    """Where each n-gram of a growing token sequence last occurred, to draft what followed it.

    Args:
        tokens: The sequence so far.
        sizes: The n-gram lengths to look up, longest first.
    """

    def __init__(self, tokens: Sequence[int], sizes: Sequence[int] = NGRAM_SIZES) -> None:
        self._tokens: list[int] = []
        self._sizes = tuple(sizes)
        self._followed: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens, indexing each n-gram once a token follows it."""
        for token in tokens:
            end = len(self._tokens)
            for size in self._sizes:
                if end >= size:
                    self._followed[tuple(self._tokens[end - size : end])] = end
            self._tokens.append(token)

    def draft(self, count: int) -> list[int]:
        """Up to ``count`` tokens that followed the latest earlier occurrence of the suffix."""
        end = len(self._tokens)
        if count <= 0:
            return []
        for size in self._sizes:
            if end >= size:
                start = self._followed.get(tuple(self._tokens[end - size : end]))
                if start is not None:
                    return self._continue_from(start, count)
        return []

    def _continue_from(self, start: int, count: int) -> list[int]:
        # A copy that reaches the end goes on copying itself: a run that repeats with period
        # ``end - start`` drafts its next period, not only the tokens seen so far.
        tokens, end = self._tokens, len(self._tokens)
        drafted: list[int] = []
        for position in range(start, start + count):
            drafted.append(tokens[position] if position < end else drafted[position - end])
        return drafted


class LookupDecoder(SoloDecoder):
    """A lone sequence decoded with drafts from its own n-grams, verified in one call each.

    The KV cache holds every token but the last one generated, which the next call feeds with
    the drafts behind it; rejected drafts are trimmed from the cache.

    Args:
        model: The mlx-lm model.
        cache: The sequence's KV cache (empty, or holding ``context[:len(context) - len(rest)]``).
        context: Every prompt token (cached ones included).
        rest: The prompt tokens the cache does not hold yet (at least one).
        sampler: mlx-lm sampler.
        processors: Stateless mlx-lm logits processors (each sees every position once, in
            order, but also positions whose drafts are then rejected).
        stream: The MLX stream to compute on.
        prefill_step: Prompt tokens per model call while prefilling.
        draft_tokens: Most tokens drafted per model call.
        max_tokens: Tokens the request may still generate (drafts never run past it).
    """

    def __init__(
        self,
        model: Any,
        cache: list[Any],
        context: Sequence[int],
        rest: Sequence[int],
        sampler: Callable[[Any], Any],
        processors: Sequence[Processor],
        stream: Any,
        prefill_step: int,
        *,
        draft_tokens: int,
        max_tokens: int,
    ) -> None:
        super().__init__(model, cache, context, rest, sampler, processors, stream, prefill_step)
        self._index = NgramIndex(context)
        self._draft_tokens = draft_tokens
        self._left = max_tokens
        self._next_input: list[int] = []  # generated, not yet fed to the model
        self.drafted = 0
        self.accepted = 0

    @property
    def held(self) -> list[int]:
        """The tokens the KV cache holds."""
        if not self._next_input:
            return super().held
        return self.tokens[:-1]

    def advance(self) -> list[int]:
        """Run one model call: a prefill chunk (no tokens) or a verified draft (1+ tokens)."""
        mx = self._mx
        with mx.stream(self._stream):
            if self._unprefilled:
                self._prefill_chunk()
                return []
            fed = self._next_input or self._last_prompt
            draft = self._index.draft(min(self._draft_tokens, self._left - 1))
            inputs = mx.array(fed + draft, dtype=mx.uint32)
            logits = self._model(inputs[None], cache=self.cache)[0]
            sampled = self._sample(inputs, logits).tolist()
        kept = 0
        while kept < len(draft) and sampled[kept] == draft[kept]:
            kept += 1
        if kept < len(draft):
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(self.cache, len(draft) - kept)
        produced = [int(token) for token in sampled[: kept + 1]]
        if self._processors:
            self._context = mx.concatenate([self._context, inputs[: kept + 1]])
        self.drafted += len(draft)
        self.accepted += kept
        self._left -= len(produced)
        self._next_input = produced[-1:]
        self.tokens.extend(produced)
        self._index.extend(produced)
        return produced

    def hand_over(self) -> tuple[int | None, list[int], list[Any], list[int]]:
        """Give the sequence to the batch: its last token, not fed yet, is fed there first."""
        if not self._next_input:
            return super().hand_over()
        return None, list(self._next_input), self.cache, self.held

    def _sample(self, inputs: Any, logits: Any) -> Any:
        """The token the model samples at each position (processors see positions in order)."""
        mx = self._mx
        if self._processors:
            rows = []
            for position in range(inputs.shape[0]):
                seen = mx.concatenate([self._context, inputs[: position + 1]])
                row = logits[position : position + 1]
                for processor in self._processors:
                    row = processor(seen, row)
                rows.append(row)
            logits = mx.concatenate(rows, axis=0)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return self._sampler(logprobs).reshape(-1)
