"""A request the worker is decoding: its parser, detokenizer, timings, and the Usage they add up to.

The worker (:mod:`mlxnb._engine.worker`) makes one :class:`Active` per admitted request with
:meth:`Active.admit`, which builds the request's sampler, guarded logits processors and event
parser, and keeps it until the request ends. Everything here runs on the worker's thread: the
sampler and processors are MLX objects, and :meth:`Active.usage` is handed the peak memory the
worker read from MLX rather than asking MLX itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlxnb._engine.backend import Prompt, TextBackend
from mlxnb._engine.parser import REASONING, EventParser
from mlxnb._engine.request import Request
from mlxnb._engine.sampling import ProcessorGuard, SeededSampler, shared_sampler
from mlxnb._engine.solo import SoloDecoder
from mlxnb._engine.thinking_budget import ThinkingBudget
from mlxnb._engine.vision import VisionBackend
from mlxnb.events import TurnBuilder, Usage

Backend = TextBackend | VisionBackend


@dataclass
class Active:
    """One request in flight, from admission to its last event.

    Attributes:
        request: The request.
        parser: Turns its decoded text into events.
        detokenizer: mlx-lm's streaming detokenizer for its tokens.
        builder: Folds its events into the turn the audit log records.
        prompt_tokens: Tokens in its rendered prompt.
        cached_tokens: Of those, how many the prompt cache already held.
        admitted: ``time.perf_counter()`` when the worker admitted it.
        first_token: When its first token came out (None before).
        last_token: When its latest token came out (None before the first).
        generated: Tokens generated so far.
        reasoning_tokens: Of those, how many were generated inside a thinking block.
        guard: Catches a failing logits processor, so only this request fails.
        solo: Its single-sequence decoder while it runs alone (:mod:`mlxnb._engine.solo`).
        max_tokens: Most tokens it may generate.
        sampler: Its mlx-lm sampler.
        processors: Its guarded logits processors.
        drafted: Prompt-lookup draft tokens proposed for it.
        accepted: Of those, how many the model confirmed.
    """

    request: Request
    parser: EventParser
    detokenizer: Any
    builder: TurnBuilder = field(default_factory=TurnBuilder)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    admitted: float = 0.0
    first_token: float | None = None
    last_token: float | None = None
    generated: int = 0
    reasoning_tokens: int = 0
    guard: ProcessorGuard = field(default_factory=lambda: ProcessorGuard())
    solo: SoloDecoder | None = None
    max_tokens: int = 0
    sampler: Any = None
    processors: list[Any] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0

    @property
    def drafts_allowed(self) -> bool:
        """Whether drafts may be checked for it: its logits processors hold no state.

        A draft's positions run through the processors even when the draft is rejected, so a
        processor that counts its calls (a JSON grammar, a thinking budget, most callers' own)
        would drift. mlx-lm's penalties and ``logit_bias`` only read the tokens they are given,
        and so does a caller's processor that says so with a true ``stateless`` attribute.
        """
        options = self.request.options
        return (
            # A seeded sampler keys each position; a draft's call covers several at once.
            not (options.seed is not None and options.temperature > 0)
            and all(getattr(p, "stateless", False) is True for p in options.logits_processors)
            and options.thinking_budget is None
            and self.request.grammar is None
        )

    @property
    def batch_sampler(self) -> Any:
        """The sampler to hand a batch decoder: ``None`` (the batch's own argmax) when greedy.

        Both batch decoders fall back to the argmax for ``None``. mlx-lm's then samples the
        greedy rows in one call; mlx-vlm's, which takes one sampler for the whole batch, needs
        no per-request sampling processor for them (full-vocabulary work on every token).
        """
        return None if self.request.options.temperature == 0 else self.sampler

    @classmethod
    def admit(
        cls, request: Request, backend: Backend, prompt: Prompt, cached: int, now: float
    ) -> Active:
        """The state for a request just admitted (on the worker thread: it makes MLX objects).

        Args:
            request: The request.
            backend: The loaded model, its tokenizer and markers.
            prompt: The request's rendered prompt.
            cached: How many of the prompt's tokens the prompt cache holds.
            now: ``time.perf_counter()`` at admission.

        Returns:
            The request's sampler, guarded processors (penalties, its own processors, then its
            JSON-schema grammar), parser and detokenizer, ready to decode.
        """
        from mlx_lm.sample_utils import make_logits_processors

        options = request.options
        # Keeping the whole vocabulary or more is no filter (mlx-lm's sampler would raise).
        vocabulary = getattr(backend, "vocab_size", None) or len(backend.tokenizer)
        top_k = options.top_k if options.top_k < vocabulary else 0
        settings = (options.temperature, options.top_p, options.min_p, top_k)
        seed = options.seed if options.temperature > 0 else None
        sampler = shared_sampler(*settings) if seed is None else SeededSampler(seed, *settings)
        guard = ProcessorGuard()
        processors = make_logits_processors(
            logit_bias=dict(options.logit_bias) or None,
            repetition_penalty=options.repetition_penalty,
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
        ) + list(options.logits_processors)
        tokenizer = backend.tokenizer
        if options.thinking_budget is not None and backend.markers.think_start is not None:
            budget = ThinkingBudget(
                options.thinking_budget,
                tokenizer.think_start_tokens,
                tokenizer.think_end_tokens,
                thinking=prompt.initial_state == REASONING,
            )
            processors.append(budget)
        if request.grammar is not None:
            from mlxnb._engine.structured import JsonSchemaProcessor

            processors.append(JsonSchemaProcessor(request.grammar, backend.tokenizer))
        parser = EventParser(
            backend.markers,
            tool_parser=backend.tokenizer.tool_parser,
            tools=request.tools,
            initial_state=prompt.initial_state,
            stop=options.stop,
            # a raw completion's text is as generated, and so is a continued message's (the
            # blocks it opens after the one carried on start as any answer's)
            trim_block_starts=request.prompt is None,
            trim_first_block=not continues(request),
        )
        detokenizer = backend.tokenizer.detokenizer
        if request.prompt is not None or continues(request):
            # a raw completion carries on its prompt's text as a continued message does
            keep_leading_space(detokenizer)
        return cls(
            request,
            parser,
            detokenizer,
            prompt_tokens=len(prompt.tokens),
            cached_tokens=cached,
            admitted=now,
            guard=guard,
            max_tokens=options.max_tokens,
            sampler=sampler,
            processors=[guard.wrap(processor) for processor in processors],
        )

    def count_token(self, now: float) -> None:
        """Count one generated token, made at ``now`` (``time.perf_counter()``)."""
        self.generated += 1
        self.first_token = self.first_token or now
        self.last_token = now

    def solo_reason(self, token: int, eos_token_ids: Any) -> str | None:
        """Why a token from the solo decoder ends the request (``stop``, ``length``), if it does."""
        if token in eos_token_ids:
            return "stop"
        return "length" if self.generated + 1 >= self.max_tokens else None

    def usage(self, peak_memory_gb: float) -> Usage:
        """The request's counts and speeds so far, with the device's peak memory in GB."""
        first, last = self.first_token, self.last_token
        prefill = self.prompt_tokens - self.cached_tokens
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.generated,
            cached_tokens=self.cached_tokens,
            reasoning_tokens=self.reasoning_tokens,
            time_to_first_token=None if first is None else first - self.request.submitted,
            prompt_tps=None if first is None else prefill / max(first - self.admitted, 1e-9),
            generation_tps=(
                (self.generated - 1) / (last - first)
                if first is not None and last is not None and last > first
                else None
            ),
            peak_memory_gb=peak_memory_gb,
            draft_tokens=self.drafted,
            accepted_draft_tokens=self.accepted,
        )


def continues(request: Request) -> bool:
    """Whether the request carries on its last (assistant) message (``continue_final_message``)."""
    return bool((request.template_kwargs or {}).get("continue_final_message"))


def keep_leading_space(detokenizer: Any) -> None:
    """Let a continuation's first token keep its leading space.

    mlx-lm's streaming detokenizers drop a space that starts their text (right for a new
    answer); a continuation's first word (a continued message's, a raw completion's) must keep
    it, or it sticks to the text before. Seeding the text with one character already read
    (``offset``) turns that trim off. A detokenizer whose ``text`` is computed (no plain
    attribute) is left as it is.
    """
    try:
        detokenizer.text, detokenizer.offset = "\0", 1
    except AttributeError:
        return
