"""Speculative decoding of a lone request: drafts checked by the model, one call for several.

A drafter proposes the next few tokens: prompt lookup (:mod:`mlxnb._engine.lookup`, n-grams
the sequence has already seen) or a small draft model with the same tokenizer
(:class:`ModelDrafter`), or both, lookup first. The model then runs once over the last token
and the drafts. It samples every position itself and a draft token is kept only while it
equals what the model sampled there, so the output is what plain decoding would have produced
(token for token when greedy, the same distribution when sampling), however bad the drafts;
the rejected ones are trimmed from the KV cache.

A rejected draft costs a wider model call than one token would. On a GPU, where a small
model's step is bound by launch overhead, that is nearly free; on a CPU it is not, which is why
speculation is asked for (``prompt_lookup=`` per request, ``draft_model=`` per engine).
This runs only while a request is alone: when another arrives the sequence joins the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mlxnb._engine.memory import settle_prefill
from mlxnb._engine.solo import Processor, SoloDecoder


class Drafter(Protocol):
    """Proposes tokens to come, and learns the tokens that did come."""

    def draft(self, count: int) -> list[int]:
        """Up to ``count`` tokens likely to follow the sequence so far (may be none)."""
        ...

    def extend(self, tokens: Sequence[int]) -> None:
        """The sequence grew by ``tokens`` (prompt tokens first, then each step's output)."""
        ...


class FirstDraft:
    """Several drafters in order: the first that proposes anything drafts this step.

    Args:
        drafters: The drafters, most preferred first (all learn every token).
    """

    def __init__(self, drafters: Sequence[Drafter]) -> None:
        self._drafters = list(drafters)

    def draft(self, count: int) -> list[int]:
        """The first non-empty draft."""
        for drafter in self._drafters:
            if proposed := drafter.draft(count):
                return proposed
        return []

    def extend(self, tokens: Sequence[int]) -> None:
        """Tell every drafter."""
        for drafter in self._drafters:
            drafter.extend(tokens)


class ModelDrafter:
    """Greedy drafts from a small model sharing the main model's tokenizer.

    Its KV cache follows the sequence lazily: tokens it has not seen are fed at the next
    :meth:`draft`, and its own drafts the main model rejected are trimmed.

    Args:
        model: The draft mlx-lm model.
        prefill_step: Tokens per call while catching up with a long prompt.
    """

    def __init__(self, model: Any, prefill_step: int) -> None:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        self._mx = mx
        self._model = model
        self._cache = make_prompt_cache(model)
        self._prefill_step = prefill_step
        self._unfed: list[int] = []
        self._drafted: list[int] = []  # its last draft, all but the last token fed

    def draft(self, count: int) -> list[int]:
        """Feed what it has not seen, then ``count`` greedy tokens in one evaluation."""
        mx = self._mx
        if count <= 0 or not self._unfed:
            self._drafted = []
            return []
        while len(self._unfed) > self._prefill_step:
            chunk, self._unfed = (
                self._unfed[: self._prefill_step],
                self._unfed[self._prefill_step :],
            )
            self._model(mx.array(chunk, dtype=mx.uint32)[None], cache=self._cache)
            settle_prefill(mx, self._cache)
        inputs = mx.array(self._unfed, dtype=mx.uint32)[None]
        proposed = []
        for _ in range(count):
            logits = self._model(inputs, cache=self._cache)[:, -1, :]
            token = mx.argmax(logits, axis=-1)
            proposed.append(token)
            inputs = token.reshape(1, 1)
        drafted = [int(t) for t in mx.concatenate(proposed).tolist()]
        self._unfed, self._drafted = [], drafted
        return drafted

    def extend(self, tokens: Sequence[int]) -> None:
        """Keep the cache's agreeing drafts, trim the rest, and queue the new tokens."""
        fed = self._drafted[:-1]  # drafts whose KV the cache holds
        agree = 0
        while agree < len(fed) and agree < len(tokens) and fed[agree] == tokens[agree]:
            agree += 1
        if len(fed) > agree:
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(self._cache, len(fed) - agree)
        self._drafted = []
        self._unfed.extend(tokens[agree:])


class SpeculativeDecoder(SoloDecoder):
    """A lone sequence decoded with drafts, each batch of them checked in one model call.

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
        drafter: Proposes the drafts; told the prompt here and each step's tokens after.
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
        drafter: Drafter,
        draft_tokens: int,
        max_tokens: int,
    ) -> None:
        super().__init__(model, cache, context, rest, sampler, processors, stream, prefill_step)
        self._drafter = drafter
        drafter.extend(context)
        self._draft_tokens = draft_tokens
        self._left = max_tokens
        self._next_input: list[int] = []  # generated, not yet fed to the model

    @property
    def held(self) -> list[int]:
        """The tokens the KV cache holds."""
        if not self._next_input:
            return super().held
        return self.tokens[:-1]

    def advance(self) -> list[int]:
        """Run one model call: a prefill chunk (no tokens) or a checked draft (1+ tokens)."""
        mx = self._mx
        with mx.stream(self._stream):
            if self._unprefilled:
                self._prefill_chunk()
                return []
            fed = self._next_input or self._last_prompt
            draft = self._drafter.draft(min(self._draft_tokens, self._left - 1))
            inputs = mx.array(fed + draft, dtype=mx.uint32)
            logits = self._model(inputs[None], cache=self.cache)[0]
            self._quantize_cache()
            tokens, logprobs = self._sample(inputs, logits)
            sampled = tokens.tolist()
        kept = 0
        while kept < len(draft) and sampled[kept] == draft[kept]:
            kept += 1
        if kept < len(draft):
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(self.cache, len(draft) - kept)
        produced = [int(token) for token in sampled[: kept + 1]]
        self.last_logprobs = [logprobs[i : i + 1] for i in range(kept + 1)]
        if self._processors:
            self._context = mx.concatenate([self._context, inputs[: kept + 1]])
        self.drafted += len(draft)
        self.accepted += kept
        self._left -= len(produced)
        self._next_input = produced[-1:]
        self._keep(produced)
        self._drafter.extend(produced)
        return produced

    def hand_over(self) -> tuple[int | None, list[int], list[Any], list[int]]:
        """Give the sequence to the batch: its last token, not fed yet, is fed there first."""
        if not self._next_input:
            return super().hand_over()
        return None, list(self._next_input), self.cache, self.held

    def _sample(self, inputs: Any, logits: Any) -> tuple[Any, Any]:
        """The token sampled at each position, and the log-probabilities it came from.

        Processors see the positions in order, each with the tokens before it.
        """
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
        return self._sampler(logprobs).reshape(-1), logprobs
