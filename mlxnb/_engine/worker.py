"""The engine's worker thread: it owns the model and every MLX call.

Requests arrive on a queue. The worker renders their prompts, looks up the prompt cache, and
inserts them into mlx-lm's ``BatchGenerator``, which batches every active request into one
forward pass per step (continuous batching). After each step it checks every request's cancel
flag, so a cancelled request leaves the batch within one step. Each admitted request's state is
an :class:`~mlxnb._engine.active.Active`. A rendered request whose KV cache would not fit the
budget beside the running ones waits (:mod:`mlxnb._engine.admission`). Callers' questions (such
as :meth:`mlxnb.Engine.memory`) come through the same queue and are answered between steps.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from mlxnb._engine.active import Active, Backend
from mlxnb._engine.admission import Admission, Waiting
from mlxnb._engine.backend import Prompt, check_context, check_logit_bias
from mlxnb._engine.commands import CLOSE, ModelQuestion, Question, answer
from mlxnb._engine.delivery import Outbox
from mlxnb._engine.forks import Forks
from mlxnb._engine.group_turns import GroupTurns
from mlxnb._engine.kv_ledger import LEDGER
from mlxnb._engine.lockstep import Lockstep, group_failed
from mlxnb._engine.logprobs import token_logprob
from mlxnb._engine.memory import MemoryStats, apply_limits, plan_memory
from mlxnb._engine.prompt_cache import PromptCache
from mlxnb._engine.recording import failed_turn
from mlxnb._engine.rendering import render_request
from mlxnb._engine.request import Request
from mlxnb._engine.threads import run_on_engine_thread
from mlxnb._engine.vision import VisionBackend
from mlxnb._engine.worker_config import Finished, WorkerConfig, prefill_plan, prefill_step_for
from mlxnb.errors import (
    DistributedError,
    EngineClosedError,
    GenerationError,
    InvalidRequestError,
    MlxnbError,
)
from mlxnb.events import Done, Event, PrefillProgress, TurnBuilder, Usage

log = logging.getLogger("mlxnb.engine")
T = TypeVar("T")

ADMISSION_POLL = 0.01
"""Seconds between two looks at waiting requests while none runs here (only another engine's
requests, in :data:`~mlxnb._engine.kv_ledger.LEDGER`, can be holding them back)."""


class Worker(GroupTurns):
    """Runs the generation loop on its own thread.

    Args:
        load: Called on the worker thread to make the backend (loading touches MLX).
        config: Batching and cache settings.
        on_finished: Called on the worker thread once per request when it ends, with its
            folded events, duration and error (the audit hook).
        lockstep: This rank's end of a distributed group when the model is sharded
            (:mod:`mlxnb._engine.lockstep`): rank 0 shares each turn's inputs, the other
            ranks run the same turns from them.
    """

    def __init__(
        self,
        load: Callable[[], Backend],
        config: WorkerConfig,
        on_finished: Finished,
        lockstep: Lockstep | None = None,
    ) -> None:
        self._load = load
        self._config = config
        self._lockstep = lockstep
        self._on_finished = on_finished
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._active: dict[int, Active] = {}
        self._outbox = Outbox()
        self.backend: Backend | None = None
        self.load_error: BaseException | None = None
        self.group_error: DistributedError | None = None  # a sharded model's group failed
        self._group_lost: DistributedError | None = None  # seen by a heartbeat watcher
        self._group_lock = threading.Lock()
        self.loaded = threading.Event()
        self.finished = threading.Event()
        self._generator: Any = None
        self._cache: Any = None
        self._solo_uids = 0
        self._admission = Admission(None, None, config.admission_timeout)
        self._system_segments: set[int] = set()  # uids whose system prefix is still to store
        self._forks = Forks()
        self._weights_bytes = 0
        self._prefill_batch, self._batch_prefill_step = prefill_plan(config, on_gpu=False)
        #: Prompt tokens per pass of a lone request's prefill (the device's, once loaded).
        self.prefill_step = prefill_step_for(config, on_gpu=False)

    def start(self, stop: Callable[[], None] | None = None) -> None:
        """Start the loop on an engine thread (it loads the model first).

        Args:
            stop: Called at interpreter exit if the loop still runs (default :meth:`stop`), so
                no MLX work is under way at finalization (see :mod:`mlxnb._engine.threads`).
        """
        run_on_engine_thread(self._run_then_release, stop=stop or self.stop)

    def _run_then_release(self) -> None:
        try:
            self._run()
        finally:
            LEDGER.leave(id(self))  # what it held and projected is the other engines' again
            # The thread lives on (see mlxnb._engine.threads): drop the model to free its memory.
            self.backend = None
            self._generator = None
            self._cache = None
            self.finished.set()

    def submit(self, request: Request) -> None:
        """Queue a request (any thread)."""
        self._commands.put(request)

    def ask(self, question: Callable[[], T], timeout: float | None) -> T:
        """Run ``question`` on the worker thread between steps and return its answer (any thread).

        Raises:
            EngineClosedError: The worker has stopped (or stops before answering).
            TimeoutError: No answer within ``timeout`` seconds.
        """
        if self.finished.is_set():
            raise EngineClosedError("the engine is closed")
        asked = Question(question)
        self._commands.put(asked)
        answer: T = asked.answer.result(timeout)
        return answer

    def ask_model(self, job: Callable[[Any], T], timeout: float | None) -> T:
        """Like :meth:`ask` for a question that runs the model: ``job(model)``.

        On a sharded model every rank runs ``job`` at the same turn, so it must be picklable
        (a top-level function, or a ``functools.partial`` of one).
        """
        if self.finished.is_set():
            raise EngineClosedError("the engine is closed")
        asked = ModelQuestion(job)
        self._commands.put(asked)
        answer: T = asked.answer.result(timeout)
        return answer

    def memory_stats(self) -> MemoryStats:
        """What the model holds in memory now (on the worker thread: it asks MLX)."""
        mx, cache, admission = self._mx, self._cache, self._admission
        return MemoryStats(
            active_bytes=int(mx.get_active_memory()),
            cache_bytes=int(mx.get_cache_memory()),
            peak_bytes=int(mx.get_peak_memory()),
            weights_bytes=self._weights_bytes,
            prompt_cache_bytes=cache.nbytes,
            prompt_cache_entries=len(cache),
            prompt_cache_system_bytes=cache.stats_by_type()["system"]["n_bytes"],
            prompt_cache_limit_bytes=cache.max_bytes,
            kv_bytes_per_token=None if admission.kv is None else admission.kv.per_token,
            kv_budget_bytes=admission.budget,
            waiting=len(admission),
        )

    def stop(self) -> None:
        """Ask the loop to end; active and queued requests end with EngineClosedError."""
        self._commands.put(CLOSE)

    def _run(self) -> None:
        try:
            if self._lockstep is not None:
                self._join_group(self._lockstep)
            self.backend = self._load()
        except BaseException as error:  # reported to every caller
            self.load_error = error
            self.loaded.set()
            self._drain_after_failure(error)
            return
        import mlx.core as mx

        self._mx = mx
        try:
            self._plan_memory()
            if self._lockstep is not None:
                self._watch_group(self._lockstep)
        except BaseException as error:  # as a load failure: reported to every caller
            self.backend, self.load_error = None, error
            self.loaded.set()
            self._drain_after_failure(error)
            return
        self.loaded.set()
        on_gpu = mx.default_device().type == mx.gpu
        self._solo_enabled = self._config.solo_fast_path
        self._prefill_batch, self._batch_prefill_step = prefill_plan(self._config, on_gpu)
        self.prefill_step = prefill_step_for(self._config, on_gpu)
        self._generator = self._new_generator()
        if self._lockstep is not None:
            self._lockstep.stream = self._generator.stream
        while True:
            idle = not self._active and not self._admission
            if idle:
                self._save_to_disk()
            follower = self._lockstep is not None and not self._lockstep.leads
            # Only other engines' requests can hold back one that waits while none runs here:
            # look again shortly, without spinning.
            poll = ADMISSION_POLL if not self._active and self._admission else None
            # A follower's turns come from rank 0 (it blocks in the collective instead).
            commands = [] if follower else self._next_commands(block=idle, poll=poll)
            if self._lockstep is not None:
                if self._group_lost is not None:
                    self._end_group(self._group_lost)
                    return
                try:
                    commands = self._share_turn(self._lockstep, commands)
                except DistributedError as error:
                    self._end_group(error)
                    return
            requests = [c for c in commands if isinstance(c, Request)]
            closing = any(c is CLOSE for c in commands)
            for command in commands:
                if isinstance(command, Question):
                    answer(command)
                elif isinstance(command, ModelQuestion):
                    self._answer_model(command)
            # Only when someone may start: the check walks the batch, and most turns admit none.
            hold = bool(requests or self._admission) and self._first_tokens_due()
            if self._admission:
                self._admit_waiting(hold)
            for request in requests:
                self._admit(request, alone=len(requests) == 1, hold=hold)
            self._reap_cancelled()
            if idle and self._company_arrived(requests, closing):
                continue  # a burst: its first request starts beside the rest, not ahead of them
            if closing:
                closed = EngineClosedError("the engine was closed")
                self._fail_all(closed)
                for entry in self._admission.entries():
                    self._admission.take(entry)
                    self._finish_failed(entry.request, closed)
                # close() refuses new requests before asking us to stop: drain what is queued.
                for command in self._next_commands(block=False):
                    if isinstance(command, Request):
                        self._finish_failed(command, closed)
                    elif isinstance(command, Question):
                        command.answer.set_exception(closed)
                self._outbox.flush()
                if self._lockstep is not None:
                    self._lockstep.farewell()
                return
            if self._active:
                try:
                    self._step()
                    self._decode_alone()
                except Exception as error:  # every active request learns of it
                    if self._lockstep is not None:  # the ranks may be out of step: stop
                        self._end_group(group_failed(error))
                        return
                    self._fail_all(GenerationError(f"generation failed: {error}"), cause=error)
                    self._generator = self._new_generator()
                    self._system_segments.clear()
            self._outbox.flush()

    def _company_arrived(self, requests: list[Request], closing: bool) -> bool:
        """Whether a request just admitted alone has company queued before its first step.

        A burst's first request wakes the worker alone, and others arrive while it is admitted
        (its prompt cache looked up, its prompt rendered if its caller did not): prefilling
        them together gives every one an earlier first token than a lone
        prefill followed by the batch's. Once per wake-up, and never across ranks, which must
        all take the same steps.
        """
        # the caller asks only on waking from idle: a skipped step never starves a running one
        return (
            len(requests) == 1
            and len(self._active) == 1
            and not closing
            and self._lockstep is None
            and not self._commands.empty()
        )

    def _plan_memory(self) -> None:
        assert self.backend is not None
        settings = self._config.memory
        apply_limits(self._mx, settings)
        kv_model = self.backend.language_model
        quantization = self._config.kv_quantization
        plan = plan_memory(self._mx, self.backend.model, kv_model, settings, quantization)
        self._weights_bytes = plan.weights_bytes
        if self._lockstep is not None:  # every rank caches and admits by rank 0's plan
            plan = self._lockstep.share(plan)
        self._cache = PromptCache(self._config.prompt_cache_size, plan.prompt_cache_bytes)
        disk = self._config.disk_cache
        if disk is not None and self.backend.reuses_prompt_cache:
            # Last kernel's system prompts: their first turn here skips their prefill.
            for tokens, cache in disk.load(plan.prompt_cache_bytes):
                self._store_cache(cache, tokens, "system")
        timeout = self._config.admission_timeout
        serial = quantization is not None
        shared = None
        if plan.kv is not None and plan.kv_budget_bytes is not None and self._lockstep is None:
            owner = id(self)
            LEDGER.join(owner, plan.weights_bytes, plan.device_bytes)
            shared = partial(LEDGER.room, owner)
        self._admission = Admission(plan.kv, plan.kv_budget_bytes, timeout, serial, shared)

    def _next_commands(self, block: bool, poll: float | None = None) -> list[Any]:
        commands = [self._commands.get()] if block else []
        if poll is not None and self._commands.empty():
            with contextlib.suppress(queue.Empty):
                commands.append(self._commands.get(timeout=poll))
        # Asked first, not caught: a turn of a decoding loop usually finds nothing, and an
        # exception raised and caught per token is a cost on the thread that launches steps.
        while not self._commands.empty():  # this thread alone takes from the queue
            commands.append(self._commands.get_nowait())
        return commands

    def _drain_after_failure(self, error: BaseException) -> None:
        while True:
            command = self._commands.get()
            if command is CLOSE:
                return
            if isinstance(command, Question):
                command.answer.set_exception(error)
                continue
            self._finish_failed(command, error)
            self._outbox.flush()

    def _new_generator(self) -> Any:
        assert self.backend is not None
        config = self._config
        if isinstance(self.backend, VisionBackend):
            return self.backend.new_generator(config.max_batch, self.prefill_step)
        return self.backend.new_generator(
            config.max_batch, self._prefill_batch, self._batch_prefill_step
        )

    def _admit(self, request: Request, alone: bool = False, hold: bool = False) -> None:
        assert self.backend is not None
        backend = self.backend
        try:
            if backend.kind == "vision" and request.options.wants_logprobs:
                # mlx-vlm's batch decoder returns no log-probabilities.
                message = f"{backend.model_id} is a vision model: logprobs are for text models"
                raise InvalidRequestError(message)
            prompt = request.rendered or render_request(backend, request)
            limit, model_id = backend.context_length, backend.model_id
            max_tokens = request.options.max_tokens
            check_context(len(prompt.tokens), max_tokens, limit, model_id)
            self._admission.check_alone(len(prompt.tokens), max_tokens, model_id)
            check_logit_bias(request.options.logit_bias, backend.tokenizer)
        except MlxnbError as error:
            self._finish_failed(request, error)
            return
        tokens = len(prompt.tokens) + request.options.max_tokens
        if self._admission and not self._active:
            self._admit_waiting()  # they came first
        if hold or len(self._admission) or not self._admission.fits(self._projections(), tokens):
            # Held for the batch's due first tokens, behind others that wait, or beside running
            # requests it does not fit: it waits.
            self._admission.wait(request, prompt, time.perf_counter())
            self._admit_waiting(hold)
            return
        self._start(request, prompt, alone)
        self._project()

    def _first_tokens_due(self) -> bool:
        """Whether newcomers should wait a pass or two: the batch has first tokens due.

        mlx-lm's batch decoder gives a prompt's first token two passes after the pass that
        prefills it (one moves it into the decoding batch, the next reads the token), and a
        pass also prefills every prompt queued before it. On the H200, newcomers that arrived
        during a burst's prefill were prefilled in the next pass, before the burst's first
        tokens came out: 60 ms more for 22 requests waiting on 9 (a timeline at 32 clients,
        ``bench.trace``). So while a request in the batch whose prompt fits one pass has no
        token yet, newcomers wait in the admission queue, and start together once those tokens
        are out. They wait two decode steps at most; a long prompt's prefill holds nobody.

        Only when a pass takes every waiting prompt (GPUs by default: ``prefill_batch`` of
        ``max_batch``). With fewer per pass (8 on the CPU) mlx-lm's own queue mixes its waves
        anyway, so holding newcomers only postponed them: on the CPU, holding gave 645 vs
        587 ms median time to first token at 32 clients (``cpu-load-hold.json``).
        """
        if self._prefill_batch < self._config.max_batch:
            return False
        step = self._batch_prefill_step
        return any(
            active.solo is None
            and active.first_token is None
            and active.prompt_tokens - active.cached_tokens <= step
            for active in self._active.values()
        )

    def _projections(self) -> list[int]:
        """The most tokens each running (or admitted, waiting for a twin) KV cache will hold."""
        running = [active.prompt_tokens + active.max_tokens for active in self._active.values()]
        return running + self._forks.projections()

    def _admit_waiting(self, hold: bool = False) -> None:
        """Start the waiting requests that fit now; end those cancelled or waiting too long.

        Args:
            hold: Start none this turn (:meth:`_first_tokens_due`).
        """
        now = time.perf_counter()
        for entry in self._admission.entries():
            expired = self._expired(entry, now)
            if self._is_cancelled(entry.request):
                self._admission.take(entry)
                self._end_unstarted(entry)
            elif expired is not None:
                self._admission.take(entry)
                self._finish_failed(entry.request, expired)
            elif hold:
                continue
            elif (not self._active and self._admission.shared is None) or self._admission.fits(
                self._projections(), entry.tokens
            ):
                self._admission.take(entry)
                self._start(entry.request, entry.prompt, alone=not self._active)
                self._project()

    def _project(self) -> None:
        """Tell the ledger what this engine's running requests will hold (admission changed)."""
        if self._admission.shared is not None:
            projected = self._admission.projected(self._projections())
            held = self._cache.nbytes if self._cache is not None else 0
            LEDGER.project(id(self), projected, held)

    def _end_unstarted(self, entry: Waiting) -> None:
        """End a waiting request its caller cancelled: audited as cancelled, nothing computed."""
        request = entry.request
        done = Done("cancelled", Usage(prompt_tokens=len(entry.prompt.tokens)))
        builder = TurnBuilder()
        builder.add(done)
        self._on_finished(request, builder, time.perf_counter() - request.submitted, None)
        self._outbox.put(request.sink, request.cancel, [done])

    def _start(self, request: Request, prompt: Prompt, alone: bool) -> None:
        assert self.backend is not None
        backend = self.backend
        if self._forks.wait(request.fork_key, request, prompt):
            return  # a twin is prefilling this prompt: start from its cache when stored
        options = request.options
        in_run = request.meta.run_id is not None
        cache, rest = None, prompt.tokens
        lone = alone and self._solo_enabled and not in_run and not self._active
        key = prompt.cache_key
        if key is not None and (backend.reuses_prompt_cache or lone):
            cache, keyed_rest = self._cache.fetch_nearest_cache(backend.model_id, key)
            rest = prompt.tokens[len(prompt.tokens) - len(keyed_rest) :]
        cached = len(prompt.tokens) - len(rest)
        try:
            prompt = backend.embedded(prompt, cached)
        except MlxnbError as error:
            self._finish_failed(request, error)
            return
        # The system prompt's prefix is stored on its own when the batch has prefilled it.
        system = prompt.system_tokens if backend.reuses_prompt_cache else 0
        store_system = cached < system < len(prompt.tokens)
        active = Active.admit(request, backend, prompt, cached, time.perf_counter())
        speculate = active.drafts_allowed and backend.kind == "text"
        drafts = speculate and (options.prompt_lookup > 0 or backend.draft_model is not None)
        solo = self._solo_enabled or drafts
        # An evaluation run's other rows follow at once (``in_run``): its first row would leave
        # the lone path within steps (a vision row, which cannot join the batch, would stay
        # beside it).
        quantized = self._config.kv_quantization
        if quantized is not None:  # only the single-sequence path holds quantised caches
            solo, alone, in_run, store_system = True, True, False, False
        lead = (
            request.fork_key is not None
            and backend.reuses_prompt_cache
            and not store_system
            and quantized is None
            and len(rest) > 1
        )
        if alone and solo and not (in_run or lead) and not self._active and not store_system:
            active.solo = backend.new_solo(
                prompt,
                active.sampler,
                active.processors,
                self._generator.stream,
                self.prefill_step,
                cache=cache,
                rest=rest,
                prompt_lookup=options.prompt_lookup,
                speculate=speculate,
                max_tokens=options.max_tokens,
            )
            if quantized is not None:
                active.solo.kv_quantization = quantized
                active.solo.hands_over = False
            self._solo_uids -= 1
            self._active[self._solo_uids] = active
            return
        self._hand_over_solo()
        arguments = {
            "max_tokens": [options.max_tokens],
            "caches": [cache],
            "all_tokens": [prompt.tokens[:cached]],
            "samplers": [active.batch_sampler],
            "logits_processors": [active.processors],
        }
        if store_system:
            segments = [prompt.tokens[cached:system], prompt.tokens[system:]]
            (uid,) = self._generator.insert_segments([segments], **arguments)
            self._system_segments.add(uid)
        elif lead:
            segments = [list(rest[:-1]), list(rest[-1:])]
            (uid,) = self._generator.insert_segments([segments], **arguments)
            assert request.fork_key is not None
            self._forks.lead(request.fork_key, uid)
        else:
            (uid,) = self._generator.insert([rest], **arguments, **prompt.generator_kwargs)
        self._active[uid] = active

    def _solo(self) -> tuple[int, Active] | None:
        for uid, active in self._active.items():
            if active.solo is not None:
                return uid, active
        return None

    def _hand_over_solo(self) -> None:
        """Move the lone request into the batch, keeping its cache and its token computed ahead."""
        found = self._solo()
        if found is None:
            return
        uid, active = found
        assert active.solo is not None
        if not active.solo.hands_over:
            return
        if active.solo.awaits_first_token:
            # Its prompt is in the cache: its first token is a step away here, but in the batch
            # it would wait for the newcomers' prefill (mlx-lm's passes) before it came out.
            self._advance_solo(uid, active)
            if uid not in self._active:
                return
        ahead, feed, cache, held = active.solo.hand_over()
        if active.guard.failure is not None:
            # The step computed ahead ran this request's failing processor: it ends here.
            self._fail_one(uid, active.guard.failure, in_batch=False)
            return
        if ahead is not None:
            (logprobs,) = active.solo.last_logprobs
            self._on_token(uid, ahead, self._solo_reason(active, ahead), logprobs)
            if uid not in self._active:
                return
        del self._active[uid]
        active.solo = None
        (new_uid,) = self._generator.insert(
            [feed],
            max_tokens=[active.max_tokens - active.generated],
            caches=[cache],
            all_tokens=[held],
            samplers=[active.batch_sampler],
            logits_processors=[active.processors],
        )
        self._active[new_uid] = active

    def _solo_reason(self, active: Active, token: int) -> str | None:
        assert self.backend is not None
        return active.solo_reason(token, self.backend.tokenizer.eos_token_ids)

    def _advance_solo(self, uid: int, active: Active) -> None:
        """One model call of the lone request's decoder; its tokens delivered."""
        solo = active.solo
        assert solo is not None
        tokens = solo.advance()
        active.drafted, active.accepted = solo.drafted, solo.accepted
        if not tokens:
            self._report_progress(active.request, *solo.prompt_progress)
        if active.guard.failure is not None:
            self._fail_one(uid, active.guard.failure, in_batch=False)
        for token, logprobs in zip(tokens, solo.last_logprobs, strict=True):
            if uid not in self._active:  # ended on an earlier token of this step
                break
            self._on_token(uid, token, self._solo_reason(active, token), logprobs)

    def _decode_alone(self) -> None:
        """Decode the lone request step after step while nothing else arrives.

        Of the loop's turn a lone decoder needs only its step, its cancel and the delivery: the
        rest (commands, admission, every request's cancel) looks at what cannot have changed
        while the command queue stays empty. On a fast device every microsecond of Python
        between steps adds to each token (``bench.bookkeeping``). A rank of a sharded model
        takes every turn from rank 0, and waiting requests need the loop's admission: both
        leave it to the loop.
        """
        if len(self._active) != 1 or self._admission or self._lockstep is not None:
            return
        ((uid, active),) = self._active.items()
        if active.solo is None:
            return
        commands, cancel, outbox = self._commands, active.request.cancel, self._outbox
        while True:
            outbox.flush()
            if uid not in self._active or not commands.empty() or cancel.is_set():
                return
            self._advance_solo(uid, active)

    def _step(self) -> None:
        found = self._solo()
        if found is not None:
            self._advance_solo(*found)
            # A decoder that cannot join the batch shares the step with it.
            if len(self._active) <= 1 or all(m.solo is not None for m in self._active.values()):
                return
        prefilled, responses = self._generator.next()
        if self._system_segments:
            self._store_system_prefixes(prefilled)
        if self._forks:
            self._share_fork_prefixes(prefilled)
        if prefilled:
            self._report_prefill(prefilled)
        for response in responses:
            member = self._active.get(response.uid)
            if member is None:
                continue
            if member.guard.failure is not None:
                self._fail_one(response.uid, member.guard.failure, response.finish_reason is None)
                continue
            if response.finish_reason is not None and response.prompt_cache is not None:
                self._store_cache(response.prompt_cache, response.all_tokens)
            logprobs = getattr(response, "logprobs", None)
            self._on_token(response.uid, response.token, response.finish_reason, logprobs)

    def _report_prefill(self, prefilled: list[Any]) -> None:
        """Report the batch decoder's prefill passes (:meth:`_report_progress`)."""
        for response in prefilled:
            member = self._active.get(response.uid)
            progress = getattr(response, "progress", None)
            if member is not None and progress and not response.end_of_prompt:
                self._report_progress(member.request, int(progress[0]), int(progress[1]))

    def _report_progress(self, request: Request, processed: int, total: int) -> None:
        """Tell a request that asked how far its prompt's processing has come.

        Only prompts that take more than one forward pass report: a shorter one's first token
        follows at once.
        """
        if request.prefill_progress and total > self.prefill_step:
            event = PrefillProgress(processed, total)
            self._outbox.put(request.sink, request.cancel, [event])

    def _on_token(self, uid: int, token: int, reason: str | None, logprobs: Any = None) -> None:
        """Detokenize and parse one generated token; finish the request when it ends.

        ``logprobs`` is the vector the token was sampled from (read only if the request asked).
        """
        active = self._active[uid]
        active.count_token(time.perf_counter())
        parser = active.parser
        thinking = parser.in_reasoning
        detokenizer = active.detokenizer
        if reason != "stop":
            detokenizer.add_token(token)
        if reason is not None:
            detokenizer.finalize()
        events = parser.feed(detokenizer.last_segment)
        thought = thinking or parser.in_reasoning  # a thinking block's markers count as its tokens
        options = active.request.options
        if options.wants_logprobs and logprobs is not None:
            assert self.backend is not None
            tokenizer, top = self.backend.tokenizer, options.top_logprobs
            events = [token_logprob(tokenizer, token, logprobs, top, thought), *events]
        if thought:
            active.reasoning_tokens += 1
        solo = active.solo
        if reason is None and parser.stopped:
            reason = "stop"
            if solo is None:
                self._remove(uid)
        self._deliver(uid, events, reason)
        if reason is not None and solo is not None:
            # Stored once its end is on its way: the caller's answer does not wait for it, and
            # no command is taken before it, so the conversation's next turn still finds it.
            self._outbox.flush()
            self._store_cache(solo.cache, solo.held_key)
            self._project()

    def _remove(self, uid: int) -> None:
        solo = self._active[uid].solo
        if solo is not None:
            self._store_cache(solo.cache, solo.held_key)
            return
        for cache, tokens in self._generator.remove([uid], return_prompt_caches=True).values():
            self._store_cache(cache, tokens)

    def _store_cache(
        self, cache: Any, tokens: list[int] | None, cache_type: str = "assistant"
    ) -> None:
        assert self.backend is not None
        # Every backend's lone requests are cached; a batch that keeps none returns none.
        if tokens and cache is not None:
            self._cache.insert_cache(self.backend.model_id, list(tokens), cache, cache_type)

    def _store_system_prefixes(self, prefilled: list[Any]) -> None:
        """Store the KV of system prompts whose segment the batch has just prefilled."""
        done = [
            r.uid
            for r in prefilled
            if r.end_of_segment and not r.end_of_prompt and r.uid in self._system_segments
        ]
        self._system_segments.difference_update(done)
        disk = self._config.disk_cache
        for cache, tokens in self._generator.extract_cache(done).values():
            self._store_cache(cache, tokens, "system")
            if disk is not None:
                disk.queue(tokens, cache)

    def _share_fork_prefixes(self, prefilled: list[Any]) -> None:
        """Store the prefixes leaders have just prefilled, then start the twins waiting."""
        done = [
            r.uid
            for r in prefilled
            if r.end_of_segment and not r.end_of_prompt and self._forks.is_leader(r.uid)
        ]
        for uid, (cache, tokens) in self._generator.extract_cache(done).items():
            self._store_cache(cache, tokens)
            self._start_followers(uid)

    def _start_followers(self, uid: int) -> None:
        for request, prompt in self._forks.release(uid):
            self._start(request, prompt, alone=False)

    def _deliver(self, uid: int, events: list[Event], reason: str | None) -> None:
        active = self._active[uid]
        if reason is not None:
            events = events + active.parser.finish()
            if reason == "stop" and active.parser.made_tool_calls:
                reason = "tool_calls"
            stop = active.parser.stop_sequence
            events.append(Done(reason, self._usage(active), stop_sequence=stop))  # type: ignore[arg-type]
        for event in events:
            active.builder.add(event)
        if reason is not None:
            # Recorded before the last event goes out: once a caller sees Done, its row exists.
            del self._active[uid]
            self._system_segments.discard(uid)
            self._finished(active, None)
            self._start_followers(uid)
        if events:
            self._outbox.put(active.request.sink, active.request.cancel, events)

    def _save_to_disk(self) -> None:
        """Write queued system-prompt caches while no request is waiting on this thread."""
        disk = self._config.disk_cache
        if disk is None or not disk.pending:
            return
        try:
            disk.flush()
        except Exception:  # a full or read-only disk must not stop generation
            log.exception("mlxnb: could not save prompt caches to %s", disk.directory)

    def _reap_cancelled(self) -> None:
        for uid in [u for u, a in self._active.items() if self._is_cancelled(a.request)]:
            self._remove(uid)
            self._deliver(uid, [], "cancelled")

    def _is_cancelled(self, request: Request) -> bool:
        if self._lockstep is not None:  # as rank 0 saw it when this turn began
            return request.request_id in self._lockstep.cancelled
        return request.cancel.is_set()

    def _expired(self, entry: Waiting, now: float) -> MlxnbError | None:
        if self._lockstep is not None and entry.request.request_id not in self._lockstep.expired:
            return None
        return self._admission.expired(entry, now)

    def _usage(self, active: Active) -> Usage:
        return active.usage(peak_memory_gb=self._mx.get_peak_memory() / 1e9)

    def _fail_one(self, uid: int, cause: BaseException, in_batch: bool) -> None:
        if in_batch:
            self._generator.remove([uid])
        error = GenerationError(f"generation failed: {type(cause).__name__}: {cause}")
        error.__cause__ = cause
        self._system_segments.discard(uid)
        self._end_with_error(self._active.pop(uid), error)
        self._start_followers(uid)

    def _fail_all(self, error: MlxnbError, cause: BaseException | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        for uid in list(self._active):
            active = self._active.pop(uid)
            with contextlib.suppress(Exception):
                self._generator.remove([uid])
            self._end_with_error(active, error)
        for request, _ in self._forks.release_all():
            self._finish_failed(request, error)

    def _end_with_error(self, active: Active, error: BaseException) -> None:
        active.builder.add(Done("error", self._usage(active), str(error)))
        self._finished(active, error)
        self._outbox.put(active.request.sink, active.request.cancel, error)

    def _finish_failed(self, request: Request, error: BaseException) -> None:
        duration = time.perf_counter() - request.submitted
        self._on_finished(request, failed_turn(error), duration, error)
        self._outbox.put(request.sink, request.cancel, error)

    def _finished(self, active: Active, error: BaseException | None) -> None:
        self._project()
        duration = time.perf_counter() - active.request.submitted
        self._on_finished(active.request, active.builder, duration, error)
