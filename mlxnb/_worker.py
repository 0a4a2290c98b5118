"""The engine's worker thread: it owns the model and every MLX call.

Requests arrive on a queue. The worker renders their prompts, looks up the prompt cache, and
inserts them into mlx-lm's ``BatchGenerator``, which batches every active request into one
forward pass per step (continuous batching). After each step it checks every request's cancel
flag, so a cancelled request leaves the batch within one step.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxnb._backends import TextBackend
from mlxnb._parser import EventParser
from mlxnb._request import Outbox, Request
from mlxnb._threads import run_on_engine_thread
from mlxnb.errors import EngineClosedError, GenerationError, MlxnbError
from mlxnb.events import Done, Event, TurnBuilder, Usage

_CLOSE = object()
Finished = Callable[[Request, TurnBuilder, float, BaseException | None], None]


@dataclass(frozen=True)
class WorkerConfig:
    """Tuning of the worker.

    Attributes:
        max_batch: Most sequences decoded together.
        prefill_batch: Most prompts processed together.
        prefill_step: Prompt tokens per forward pass while prefilling (cancel checks between).
        prompt_cache_size: Conversations whose KV cache is kept for reuse.
    """

    max_batch: int = 32
    prefill_batch: int = 8
    prefill_step: int = 2048
    prompt_cache_size: int = 16


@dataclass
class _Active:
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
    guard: ProcessorGuard = field(default_factory=lambda: ProcessorGuard())


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


class Worker:
    """Runs the generation loop on its own thread.

    Args:
        load: Called on the worker thread to make the backend (loading touches MLX).
        config: Batching and cache settings.
        on_finished: Called on the worker thread once per request when it ends, with its
            folded events, duration and error (the audit hook).
    """

    def __init__(
        self, load: Callable[[], TextBackend], config: WorkerConfig, on_finished: Finished
    ) -> None:
        self._load = load
        self._config = config
        self._on_finished = on_finished
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._active: dict[int, _Active] = {}
        self._outbox = Outbox()
        self.backend: TextBackend | None = None
        self.load_error: BaseException | None = None
        self.loaded = threading.Event()
        self.finished = threading.Event()
        self._generator: Any = None
        self._cache: Any = None

    def start(self) -> None:
        """Start the loop on an engine thread (it loads the model first)."""
        run_on_engine_thread(self._run_then_release)

    def _run_then_release(self) -> None:
        try:
            self._run()
        finally:
            # The thread lives on (see mlxnb._threads): drop the model so its memory is freed.
            self.backend = None
            self._generator = None
            self._cache = None
            self.finished.set()

    def submit(self, request: Request) -> None:
        """Queue a request (any thread)."""
        self._commands.put(request)

    def stop(self) -> None:
        """Ask the loop to end; active and queued requests end with EngineClosedError."""
        self._commands.put(_CLOSE)

    def _run(self) -> None:
        try:
            self.backend = self._load()
        except BaseException as error:  # reported to every caller
            self.load_error = error
            self.loaded.set()
            self._drain_after_failure(error)
            return
        self.loaded.set()
        import mlx.core as mx

        self._mx = mx
        self._cache = self._new_prompt_cache()
        self._generator = self._new_generator()
        while True:
            closing = False
            for command in self._next_commands(block=not self._active):
                if command is _CLOSE:
                    closing = True
                else:
                    self._admit(command)
            self._reap_cancelled()
            if closing:
                closed = EngineClosedError("the engine was closed")
                self._fail_all(closed)
                # close() refuses new requests before asking us to stop: drain what is queued.
                for command in self._next_commands(block=False):
                    if command is not _CLOSE:
                        self._finish_failed(command, closed)
                self._outbox.flush()
                return
            if self._active:
                try:
                    self._step()
                except Exception as error:  # every active request learns of it
                    self._fail_all(GenerationError(f"generation failed: {error}"), cause=error)
                    self._generator = self._new_generator()
            self._outbox.flush()

    def _next_commands(self, block: bool) -> list[Any]:
        commands = [self._commands.get()] if block else []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands

    def _drain_after_failure(self, error: BaseException) -> None:
        while True:
            command = self._commands.get()
            if command is _CLOSE:
                return
            self._finish_failed(command, error)
            self._outbox.flush()

    def _new_prompt_cache(self) -> Any:
        from mlx_lm.models.cache import LRUPromptCache

        return LRUPromptCache(max_size=self._config.prompt_cache_size)

    def _new_generator(self) -> Any:
        from mlx_lm.generate import BatchGenerator

        assert self.backend is not None
        eos = sorted(self.backend.tokenizer.eos_token_ids)
        return BatchGenerator(
            self.backend.model,
            stop_tokens=[[token] for token in eos],
            completion_batch_size=self._config.max_batch,
            prefill_batch_size=min(self._config.prefill_batch, self._config.max_batch),
            prefill_step_size=self._config.prefill_step,
        )

    def _admit(self, request: Request) -> None:
        from mlx_lm.sample_utils import make_logits_processors

        assert self.backend is not None
        backend = self.backend
        try:
            if request.prompt is not None:
                prompt = backend.render_text(request.prompt)
            else:
                prompt = backend.render(
                    request.messages,
                    request.tools,
                    request.enable_thinking,
                    request.template_kwargs,
                )
        except MlxnbError as error:
            self._finish_failed(request, error)
            return
        options = request.options
        cache, rest = self._cache.fetch_nearest_cache(backend.model_id, prompt.tokens)
        if cache is not None and not rest:
            cache, rest = self._back_off_one(cache, prompt.tokens)
        cached = len(prompt.tokens) - len(rest)
        if options.seed is not None:
            self._mx.random.seed(options.seed)
        sampler = shared_sampler(options.temperature, options.top_p, options.min_p, options.top_k)
        guard = ProcessorGuard()
        processors = make_logits_processors(
            repetition_penalty=options.repetition_penalty,
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
        ) + list(options.logits_processors)
        processors = [guard.wrap(processor) for processor in processors]
        (uid,) = self._generator.insert(
            [rest],
            max_tokens=[options.max_tokens],
            caches=[cache],
            all_tokens=[prompt.tokens[:cached]],
            samplers=[sampler],
            logits_processors=[processors],
        )
        parser = EventParser(
            backend.markers,
            tool_parser=backend.tokenizer.tool_parser,
            tools=request.tools,
            initial_state=prompt.initial_state,
            stop=options.stop,
        )
        self._active[uid] = _Active(
            request,
            parser,
            backend.tokenizer.detokenizer,
            prompt_tokens=len(prompt.tokens),
            cached_tokens=cached,
            admitted=time.perf_counter(),
            guard=guard,
        )

    def _back_off_one(self, cache: Any, tokens: list[int]) -> tuple[Any, list[int]]:
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        # An exact hit leaves nothing to feed; re-feed the last token to get fresh logits.
        if can_trim_prompt_cache(cache):
            trim_prompt_cache(cache, 1)
            return cache, tokens[-1:]
        return None, tokens

    def _step(self) -> None:
        _, responses = self._generator.next()
        now = time.perf_counter()
        for response in responses:
            active = self._active.get(response.uid)
            if active is None:
                continue
            if active.guard.failure is not None:
                self._fail_one(response.uid, active.guard.failure, response.finish_reason is None)
                continue
            active.generated += 1
            active.first_token = active.first_token or now
            active.last_token = now
            detokenizer = active.detokenizer
            if response.finish_reason != "stop":
                detokenizer.add_token(response.token)
            if response.finish_reason is not None:
                detokenizer.finalize()
            events = active.parser.feed(detokenizer.last_segment)
            reason = response.finish_reason
            if reason is None and active.parser.stopped:
                reason = "stop"
                self._remove(response.uid)
            elif reason is not None and response.prompt_cache is not None:
                self._store_cache(response.prompt_cache, response.all_tokens)
            self._deliver(response.uid, events, reason)

    def _remove(self, uid: int) -> None:
        for cache, tokens in self._generator.remove([uid], return_prompt_caches=True).values():
            self._store_cache(cache, tokens)

    def _store_cache(self, cache: Any, tokens: list[int]) -> None:
        assert self.backend is not None
        if tokens:
            self._cache.insert_cache(self.backend.model_id, list(tokens), cache)

    def _deliver(self, uid: int, events: list[Event], reason: str | None) -> None:
        active = self._active[uid]
        if reason is not None:
            events = events + active.parser.finish()
            if reason == "stop" and active.parser.made_tool_calls:
                reason = "tool_calls"
            events.append(Done(reason, self._usage(active)))  # type: ignore[arg-type]
        for event in events:
            active.builder.add(event)
        if reason is not None:
            # Recorded before the last event goes out: once a caller sees Done, its row exists.
            del self._active[uid]
            self._finished(active, None)
        if events:
            self._outbox.put(active.request, events)

    def _reap_cancelled(self) -> None:
        for uid in [u for u, a in self._active.items() if a.request.cancel.is_set()]:
            self._remove(uid)
            self._deliver(uid, [], "cancelled")

    def _usage(self, active: _Active) -> Usage:
        first, last = active.first_token, active.last_token
        prefill = active.prompt_tokens - active.cached_tokens
        return Usage(
            prompt_tokens=active.prompt_tokens,
            completion_tokens=active.generated,
            cached_tokens=active.cached_tokens,
            time_to_first_token=None if first is None else first - active.request.submitted,
            prompt_tps=None if first is None else prefill / max(first - active.admitted, 1e-9),
            generation_tps=(
                (active.generated - 1) / (last - first)
                if first is not None and last is not None and last > first
                else None
            ),
            peak_memory_gb=self._mx.get_peak_memory() / 1e9,
        )

    def _fail_one(self, uid: int, cause: BaseException, in_batch: bool) -> None:
        if in_batch:
            self._generator.remove([uid])
        active = self._active.pop(uid)
        error = GenerationError(f"generation failed: {type(cause).__name__}: {cause}")
        error.__cause__ = cause
        active.builder.add(Done("error", self._usage(active), str(error)))
        self._finished(active, error)
        self._outbox.put(active.request, error)

    def _fail_all(self, error: MlxnbError, cause: BaseException | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        for uid in list(self._active):
            active = self._active.pop(uid)
            with contextlib.suppress(Exception):
                self._generator.remove([uid])
            active.builder.add(Done("error", self._usage(active), str(error)))
            self._finished(active, error)
            self._outbox.put(active.request, error)

    def _finish_failed(self, request: Request, error: BaseException) -> None:
        builder = TurnBuilder()
        builder.add(Done("error", Usage(), str(error)))
        self._on_finished(request, builder, time.perf_counter() - request.submitted, error)
        self._outbox.put(request, error)

    def _finished(self, active: _Active, error: BaseException | None) -> None:
        duration = time.perf_counter() - active.request.submitted
        self._on_finished(active.request, active.builder, duration, error)
