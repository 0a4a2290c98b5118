"""Decoding a lone request with mlx-lm's single-sequence step, until a second one arrives.

mlx-lm's ``BatchGenerator`` batches well, but a batch of one decodes slower than mlx-lm's
single-sequence path on fast devices (measured on an H100: 110 vs 170 tokens/s for Qwen3-0.6B's
shape). When one request runs alone the worker decodes it here; when another request arrives the
sequence is handed to the batch with its KV cache, losing no work: the step already computed
ahead of time becomes the next token, so logits processors see each step exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mlxnb._engine.memory import CLEAR_EVERY, settle_prefill

Processor = Callable[[Any, Any], Any]


class SoloDecoder:
    """One sequence's prefill and decode loop, one model call per :meth:`advance`.

    Args:
        model: The mlx-lm model.
        cache: The sequence's KV cache (empty, or holding ``context[:len(context) - len(rest)]``).
        context: Every prompt token (cached ones included): logits processors see it all.
        rest: The prompt tokens the cache does not hold yet (at least one).
        sampler: mlx-lm sampler.
        processors: mlx-lm logits processors.
        stream: The MLX stream to compute on.
        prefill_step: Prompt tokens per model call while prefilling.
        max_tokens: Tokens the request may generate (``None``: no bound): no step is computed
            ahead of its last one.
    """

    #: Whether :meth:`hand_over` can move this sequence into the batch decoder.
    hands_over = True
    #: Draft tokens proposed and accepted (only speculative decoders draft).
    drafted = 0
    accepted = 0
    #: The log-probability vectors (``1 x vocabulary``) of the tokens last returned or handed.
    last_logprobs: list[Any] = []  # noqa: RUF012  (replaced, never mutated)
    #: Quantises the KV cache after each model call (``kv_bits``; ``None``: never).
    kv_quantization: Any = None
    #: What the prompt cache files the prompt under, when not its tokens (see
    #: :attr:`Prompt.cache_key <mlxnb._engine.backend.Prompt.cache_key>`).
    cache_key: list[int] | None = None
    #: Whether the prompt cache may keep this sequence.
    cacheable = True

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
        max_tokens: int | None = None,
    ) -> None:
        import mlx.core as mx

        self._mx = mx
        self._model = model
        self.cache = cache
        self._sampler = sampler
        self._processors = list(processors)
        self._stream = stream
        self._prefill_step = prefill_step
        self.tokens = list(context)
        self._prompt_length = len(self.tokens)
        self._to_feed = len(rest)
        self._unprefilled = list(rest[:-1])
        self._last_prompt = list(rest[-1:])
        self._context = mx.array(self.tokens[: len(self.tokens) - len(rest)], dtype=mx.uint32)
        self._pending: Any = None
        self._max_tokens = max_tokens

    @property
    def held(self) -> list[int]:
        """The tokens the KV cache holds (what a prompt cache may store it under)."""
        return self.tokens[: len(self.tokens) - self._unfed]

    @property
    def held_key(self) -> list[int] | None:
        """What the prompt cache files :attr:`held` under (``None``: it may not keep it).

        The prompt's key (see :attr:`cache_key`), then the generated tokens.
        """
        held = self.held
        if not self.cacheable:
            return None
        if self.cache_key is None:
            return held
        return (self.cache_key + held[self._prompt_length :])[: len(held)]

    @property
    def _unfed(self) -> int:
        """Prompt tokens not in the KV cache yet (none once decoding has started)."""
        return len(self._unprefilled) + len(self._last_prompt) if self._pending is None else 0

    @property
    def awaits_first_token(self) -> bool:
        """Whether the whole prompt is in the KV cache and nothing is generated yet."""
        return not self._unprefilled and len(self.tokens) == self._prompt_length

    @property
    def prompt_progress(self) -> tuple[int, int]:
        """``(processed, total)`` of the prompt tokens the cache did not hold at the start.

        Counted as mlx-lm's batch decoder counts them, so a request reports the same whichever
        path prefills it.
        """
        return self._to_feed - self._unfed, self._to_feed

    def advance(self) -> list[int]:
        """Run one model call: a prefill chunk (no tokens) or a decode step (its token)."""
        mx = self._mx
        with mx.stream(self._stream):
            if self._unprefilled:
                self._prefill_chunk()
                return []
            if self._pending is None:
                self._pending = self._step(mx.array(self._last_prompt, dtype=mx.uint32))
                # Its own evaluation, so reading it does not wait for the step queued after it.
                mx.async_eval(self._pending[0])
            token, logprobs = self._pending
            if self._is_last():
                # As mlx-lm's loop does: a step computed ahead of the last token would be thrown
                # away, and the device would still owe it when the next request starts. Left
                # as before the first step, the token to feed first (should it go on anyway).
                value = int(token.item())
                self._pending, self._last_prompt = None, [value]
            else:
                # Queue the next step before reading this one, so the device never waits on
                # Python.
                self._pending = self._step(token)
                mx.async_eval(self._pending[0])
                value = int(token.item())
        self._keep([value])
        self.last_logprobs = [logprobs]
        return [value]

    def _is_last(self) -> bool:
        """Whether the token about to be read is the last one the request may generate."""
        generated = len(self.tokens) - self._prompt_length
        return self._max_tokens is not None and generated + 1 >= self._max_tokens

    def _keep(self, produced: list[int]) -> None:
        """Append generated tokens; every :data:`CLEAR_EVERY` of them, free MLX's buffer cache.

        As mlx-lm's own loop does: the KV cache grows in steps, and its outgrown buffers would
        otherwise stay in MLX's cache.
        """
        before = len(self.tokens) - self._prompt_length
        self.tokens.extend(produced)
        if before // CLEAR_EVERY != (before + len(produced)) // CLEAR_EVERY:
            self._mx.clear_cache()

    def hand_over(self) -> tuple[int | None, list[int], list[Any], list[int]]:
        """Stop here and give the sequence to the batch, losing no work.

        Returns:
            ``(ahead, feed, cache, held)``: ``ahead`` is the token already computed ahead of
            time (``None`` while prefilling), a generated token the caller must deliver;
            ``feed`` is what the batch must process first (``[ahead]``, or the prompt tokens
            not prefilled yet); ``cache`` holds exactly the tokens ``held``.
        """
        if self._pending is None:
            return None, self._unprefilled + self._last_prompt, self.cache, self.held
        token, logprobs = self._pending
        ahead = int(token.item())
        self.last_logprobs = [logprobs]
        return ahead, [ahead], self.cache, list(self.tokens)

    def _prefill_chunk(self) -> None:
        mx = self._mx
        chunk = self._unprefilled[: self._prefill_step]
        self._unprefilled = self._unprefilled[len(chunk) :]
        inputs = mx.array(chunk, dtype=mx.uint32)
        self._prefill(inputs)
        self._quantize_cache()
        self._context = mx.concatenate([self._context, inputs])
        settle_prefill(mx, self.cache)

    def _quantize_cache(self) -> None:
        """Quantise the cache's layers once they hold enough tokens (``kv_bits``)."""
        if self.kv_quantization is not None:
            self.kv_quantization.apply(self.cache)

    def _prefill(self, inputs: Any) -> None:
        """Feed prompt tokens (a 1-D array) into the cache; their logits are not needed."""
        self._model(inputs[None], cache=self.cache)

    def _logits(self, inputs: Any) -> Any:
        """The next token's logits (``1 x vocabulary``) after feeding ``inputs`` (1-D)."""
        return self._model(inputs.reshape(1, -1), cache=self.cache)[:, -1, :]

    def _step(self, inputs: Any) -> tuple[Any, Any]:
        """Queue one decode step: the sampled token and the log-probabilities it came from."""
        mx = self._mx
        logits = self._logits(inputs)
        self._quantize_cache()
        if self._processors:
            self._context = mx.concatenate([self._context, inputs.reshape(-1)])
            for processor in self._processors:
                logits = processor(self._context, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        # One row in, one token out (shape ``(1,)``), used as it is: each reshaping op would
        # be a graph node to build and evaluate on the thread that launches every step.
        return self._sampler(logprobs), logprobs
