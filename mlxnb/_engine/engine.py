"""The engine: one model in the kernel, shared by every front door.

Callers on any thread or event loop submit requests; the worker thread (:mod:`mlxnb._engine.worker`)
owns the model and every MLX call and sends events back to each caller's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Literal

from mlxnb._audit import AuditLog
from mlxnb._engine.attention import prefer_attention_without_plans
from mlxnb._engine.backend import (
    TextBackend,
    context_length,
    generation_defaults,
    load_draft_model,
    load_text_model,
    read_config,
)
from mlxnb._engine.catalog import model_name
from mlxnb._engine.delivery import AsyncSink, SyncSink, unpack
from mlxnb._engine.disk_cache import DiskPromptCache, model_fingerprint
from mlxnb._engine.kv_quantization import DEFAULT_START, kv_quantization
from mlxnb._engine.lockstep import join_group, refuse_unsharded
from mlxnb._engine.memory import KvBudget, MemorySettings, MemoryStats
from mlxnb._engine.recording import ScoreCall, failed_turn, record_score, record_turn
from mlxnb._engine.rendering import render_request
from mlxnb._engine.request import (
    UNCHECKED_OPTIONS,
    Request,
    RequestMeta,
    RequestOptions,
    default_max_tokens,
    sampling_options,
)
from mlxnb._engine.response_format import requested_format, with_parsed
from mlxnb._engine.scoring import Score, score_continuations, token_ids
from mlxnb._engine.sharding import load_sharded_text_model
from mlxnb._engine.structured import compile_json_schema
from mlxnb._engine.tool_choice import ToolChoice, plan_tools
from mlxnb._engine.vision import VisionBackend, kind_of, load_vision_model
from mlxnb._engine.worker import Worker
from mlxnb._engine.worker_config import WorkerConfig
from mlxnb._ids import new_request_id
from mlxnb._images import Image, ImagePolicy, no_vision_error
from mlxnb._messages import normalize_messages
from mlxnb.errors import EngineBusyError, EngineClosedError, InvalidRequestError, MlxnbError
from mlxnb.events import Event, Turn, TurnBuilder, acollect, collect

Messages = Sequence[Mapping[str, Any]]
Backend = TextBackend | VisionBackend
Tools = Sequence[Mapping[str, Any]] | None


class Engine:
    """One model loaded in the kernel, generating for any number of concurrent callers.

    Prefer :func:`mlxnb.load`. Requests from the widget, the HTTP server, evaluation loops and
    plain Python share the model through continuous batching; every turn is recorded in
    :attr:`audit`.

    Args:
        model: A local model directory or a Hugging Face repo id.
        max_batch: Most sequences decoded together.
        max_pending: Most requests queued or running; more raise :class:`EngineBusyError`.
        max_tokens: Default ``max_tokens`` for requests that do not say. ``None``: 4096 for a
            model that thinks (its reasoning counts), else 1024.
        prompt_cache_size: Conversations whose KV cache is kept, so follow-up turns only
            process their new tokens.
        prefill_batch: Most prompts prefilled together in one forward pass (a burst of requests
            is prefilled in groups of this many). ``None``: ``max_batch`` on GPUs, 8 on the
            CPU (measured: see ``bench/bench_load.py`` in the README).
        prefill_step: Prompt tokens per forward pass while prefilling (cancellation and new
            arrivals are checked between passes). ``None``: 2048 on GPUs, 256 on the CPU,
            whose attention is not fused (a 4 096-token prompt's first token came 28 % sooner,
            with 37 % less peak memory, in chunks of 256; see ``bench/prefill_chunks.py``).
        solo_fast_path: Decode a request that runs alone with a single-sequence step (a text
            request joins the batch when another request arrives; a vision request, which
            mlx-vlm's batch cannot adopt, decodes beside it). On by default: a batch of one
            costs more per token on every device measured (see the README's speed section).
        audit: Where turns are recorded: an :class:`~mlxnb.AuditLog`, ``None`` for the
            default log (``$MLXNB_AUDIT`` or the per-user data directory), ``False`` for none.
        name: The model's name in audit rows, API responses and listings (default: the repo
            id, or the directory's name; never an absolute path).
        prompt_cache_bytes: Most bytes of KV the prompt cache keeps (``None``: an eighth of the
            device's memory); system prompts are evicted last.
        memory_limit: MLX's memory limit in bytes (``mx.set_memory_limit``; ``None``: MLX's).
        cache_limit: MLX's buffer-cache limit in bytes (``mx.set_cache_limit``; ``None``: MLX's).
        kv_budget_bytes: Bytes of KV cache the running requests may project together (prompt
            plus ``max_tokens`` each, padded as a batch pads them). A request that does not fit
            waits; one that could never fit is refused before prefill (``KvBudgetError``).
            ``"auto"``: three quarters of the device's memory less the weights and the prompt
            cache (at least a sixteenth of it); ``None`` or ``0``: no budget.
        admission_timeout: Seconds a request may wait for KV memory before it ends with
            :class:`EngineBusyError` (429 over HTTP).
        prompt_cache_dir: Keep system prompts' KV caches in this folder (those of 256 tokens or
            more, written while the engine is idle), and load this model's at start: a long
            system prompt processed once is reused by the next kernel. ``None``: off.
        prompt_cache_dir_bytes: Most bytes the folder may hold (least recently used go first).
        draft_model: A small text model with the same tokenizer (a directory or a repo id):
            while a request runs alone, it drafts ``num_draft_tokens`` tokens that the model
            checks in one call (speculative decoding; the output is unchanged). Requests with
            stateful logits processors, a JSON schema or a thinking budget decode without it.
        num_draft_tokens: Tokens the draft model proposes per step.
        adapter_path: A folder of LoRA (or DoRA) adapters as ``mlx_lm.lora`` writes them
            (``adapter_config.json`` and ``adapters.safetensors``), applied to the model as
            ``mlx_lm.load(..., adapter_path=...)`` applies them: the fine-tuned model, unfused.
            The default name then ends in ``+`` and the folder's name, so base and fine-tuned
            models are told apart in audit rows, listings and the picker. Text models only.
        kv_bits: Quantise each sequence's KV cache to this many bits (2, 3, 4, 5, 6 or 8) once
            it holds ``quantized_kv_start`` tokens, as mlx-lm does: a long context in a
            fraction of the memory (4 bits: about 3.5x less than bf16), at some cost in
            accuracy. mlx-lm's batch decoder cannot hold quantised caches, so requests then
            decode one at a time, in arrival order (``admission_timeout`` does not apply to
            that wait). Text models only.
        kv_group_size: Elements sharing one scale and bias in the quantised cache.
        quantized_kv_start: Tokens a sequence holds before its cache is quantised.
        distributed: Shard the model over the processes of the MLX distributed group this
            program was started in (``mlx.launch``): tensor parallel where the model's head
            counts divide by the group's size, pipeline parallel otherwise (mlx-lm's sharded
            loading). Rank 0's engine serves; on the other ranks the engine follows rank 0 step
            for step (see :func:`mlxnb.load`). Alone in its group, the model loads whole.
            Text models only, without ``draft_model`` or ``prompt_cache_dir``.
        wait: Block until the model is loaded (load errors are raised here).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        max_batch: int = 32,
        max_pending: int = 256,
        max_tokens: int | None = None,
        prompt_cache_size: int = 16,
        prefill_batch: int | None = None,
        prefill_step: int | None = None,
        solo_fast_path: bool = True,
        audit: AuditLog | Literal[False] | None = None,
        kind: str | None = None,
        allow_remote_images: bool = False,
        name: str | None = None,
        prompt_cache_bytes: int | None = None,
        memory_limit: int | None = None,
        cache_limit: int | None = None,
        kv_budget_bytes: KvBudget = "auto",
        admission_timeout: float = 30.0,
        prompt_cache_dir: str | Path | None = None,
        prompt_cache_dir_bytes: int = 2 << 30,
        draft_model: str | Path | None = None,
        num_draft_tokens: int = 3,
        adapter_path: str | Path | None = None,
        kv_bits: int | None = None,
        kv_group_size: int = 64,
        quantized_kv_start: int = DEFAULT_START,
        distributed: bool = False,
        wait: bool = True,
    ) -> None:
        if not isinstance(num_draft_tokens, int) or not 1 <= num_draft_tokens <= 64:
            raise InvalidRequestError("num_draft_tokens must be a whole number from 1 to 64")
        quantization = kv_quantization(kv_bits, kv_group_size, quantized_kv_start)
        self._lockstep = join_group() if distributed else None
        if self._lockstep is not None:
            refuse_unsharded(
                draft_model=draft_model,
                prompt_cache_dir=prompt_cache_dir,
                adapter_path=adapter_path,
            )
        self._draft_model = draft_model
        self._num_draft_tokens = num_draft_tokens
        self.path = str(model)
        #: The LoRA adapters' folder applied to the model (``None``: the model as it is).
        self.adapter_path = None if adapter_path is None else str(adapter_path)
        self.model_id = name or model_name(model, self.adapter_path)
        self._kind = kind
        self.allow_remote_images = allow_remote_images
        self.max_tokens = max_tokens
        self._max_pending = max_pending
        self._pending = 0
        self.requests_served = 0  # finished requests (done, cancelled or failed)
        self._lock = threading.Lock()
        self._closed = False
        if audit is None:
            audit = AuditLog()
        self.audit = None if audit is False else audit
        config = WorkerConfig(
            max_batch=max_batch,
            prefill_batch=prefill_batch,
            prefill_step=prefill_step,
            prompt_cache_size=prompt_cache_size,
            solo_fast_path=solo_fast_path,
            memory=MemorySettings(prompt_cache_bytes, memory_limit, cache_limit, kv_budget_bytes),
            admission_timeout=admission_timeout,
            disk_cache=(
                DiskPromptCache(Path(prompt_cache_dir).expanduser(), prompt_cache_dir_bytes)
                if prompt_cache_dir is not None
                else None
            ),
            kv_quantization=quantization,
        )
        self._disk_cache = config.disk_cache
        self._worker_config = config
        prefer_attention_without_plans()
        self._worker = Worker(self._load_backend, config, self._on_finished, self._lockstep)
        # At interpreter exit a still-open engine is closed (mlxnb._engine.threads), so a late
        # request raises EngineClosedError instead of waiting on a stopped worker.
        self._worker.start(stop=self.close)
        if wait:
            self.wait_ready()

    def _load_backend(self) -> Backend:
        if self._disk_cache is not None:
            self._disk_cache.bind(model_fingerprint(self.path, self.model_id, self.adapter_path))
        config = read_config(self.path) or {}  # read once: the kind and the context length
        limit = context_length(config)
        sampling = generation_defaults(read_config(self.path, "generation_config.json"))
        if kind_of(config, self._kind) == "vision":
            if self._lockstep is not None:
                raise InvalidRequestError("distributed=True works with text models only")
            if self._draft_model is not None:
                raise InvalidRequestError("draft_model works with text models only")
            if self.adapter_path is not None:
                raise InvalidRequestError("adapter_path works with text models only")
            if self._worker_config.kv_quantization is not None:
                raise InvalidRequestError(
                    "kv_bits works with text models only (mlx-vlm decodes with full-precision KV)"
                )
            model, processor, tokenizer, _ = load_vision_model(self.path)
            return VisionBackend(
                model, processor, tokenizer, self.model_id, limit, generation_defaults=sampling
            )
        if self._lockstep is not None:
            model, tokenizer, _ = load_sharded_text_model(self.path, self._lockstep.group)
        else:
            model, tokenizer, _ = load_text_model(self.path, self.adapter_path)
        backend = TextBackend(model, tokenizer, self.model_id, limit, sampling)
        if self._draft_model is not None:
            backend.draft_model = load_draft_model(self._draft_model, tokenizer)
            backend.num_draft_tokens = self._num_draft_tokens
        return backend

    @property
    def kind(self) -> str:
        """``"text"`` or ``"vision"`` (after loading).

        Raises:
            EngineClosedError: The engine was closed (its model is released).
        """
        return self._loaded_backend().kind

    # -- readiness -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether loading has finished (successfully or not)."""
        return self._worker.loaded.is_set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded.

        Raises:
            ModelNotFoundError: The model does not exist.
            ModelLoadError: It could not be loaded.
            TimeoutError: ``timeout`` passed first.
        """
        if not self._worker.loaded.wait(timeout):
            raise TimeoutError(f"{self.model_id} did not load within {timeout} s")
        if self._worker.load_error is not None:
            raise self._worker.load_error

    async def await_ready(self) -> None:
        """Like :meth:`wait_ready`, without blocking the event loop."""
        while not self._worker.loaded.is_set():
            await asyncio.sleep(0.05)
        self.wait_ready(0)

    @property
    def tokenizer(self) -> Any:
        """The model's mlx-lm ``TokenizerWrapper`` (after loading).

        Raises:
            EngineClosedError: The engine was closed (its model is released).
        """
        return self._loaded_backend().tokenizer

    def _loaded_backend(self) -> Backend:
        self.wait_ready()
        backend = self._worker.backend
        if backend is None:
            raise EngineClosedError(f"the engine for {self.model_id} is closed")
        return backend

    @property
    def context_length(self) -> int | None:
        """The most tokens the model's context holds (from its ``config.json``; ``None``: unknown).

        Raises:
            EngineClosedError: The engine was closed.
        """
        limit: int | None = self._loaded_backend().context_length
        return limit

    @property
    def supports_thinking(self) -> bool:
        """Whether the tokenizer knows thinking markers."""
        return bool(self.tokenizer.has_thinking)

    @property
    def supports_tools(self) -> bool:
        """Whether the tokenizer has a tool-call format and parser."""
        return bool(self.tokenizer.has_tool_calling)

    @property
    def pending(self) -> int:
        """Requests queued or generating now."""
        return self._pending

    # -- requests --------------------------------------------------------------------------

    def _submit(
        self,
        sink: AsyncSink | SyncSink,
        messages: Messages,
        tools: Tools,
        enable_thinking: bool | None,
        request: RequestOptions,
    ) -> Request:
        if self.follows:  # its worker takes turns from rank 0 only: a request would never run
            raise InvalidRequestError(_FOLLOWER_REFUSAL)
        submitted = Request(
            messages=[],
            tools=list(tools) if tools else None,
            enable_thinking=enable_thinking,
            template_kwargs=request.chat_template_kwargs,
            options=UNCHECKED_OPTIONS,
            meta=request.meta,
            request_id=request.meta.request_id or new_request_id(),
            sink=sink,
            prompt=request.prompt,
            prefill_progress=request.prefill_progress,
        )
        try:
            # Checked here, on the caller's thread, so a bad request costs the worker nothing.
            if request.prompt is None:
                normalized = normalize_messages(messages, policy=self._image_policy(request.meta))
                self._check_images(normalized.images)
                submitted.messages, submitted.images = normalized.messages, normalized.images
            defaults = self._sampling_defaults()
            submitted.options = sampling_options(defaults, request.sampling)
            submitted.fork_key = request.meta.sample_group
            if request.json_schema is not None:
                submitted.grammar = compile_json_schema(dict(request.json_schema))
                submitted.schema_name = request.schema_name
            if request.tool_choice is not None or not request.parallel_tool_calls:
                plan = plan_tools(
                    tools,
                    request.tool_choice,
                    request.parallel_tool_calls,
                    self._loaded_backend().tokenizer,
                    has_json_schema=request.json_schema is not None,
                )
                submitted.tools = plan.tools
                submitted.grammar = plan.grammar or submitted.grammar
            backend = self._worker.backend
            if isinstance(backend, TextBackend) and self._lockstep is None:
                # Here, not on the thread that launches the model's steps: under load the
                # worker admits a burst one request after another before it prefills any.
                submitted.rendered = render_request(backend, submitted)
        except MlxnbError as invalid:
            self._refuse(submitted, invalid)
            raise
        with self._lock:
            if self._closed:
                error: MlxnbError = EngineClosedError(f"the engine for {self.model_id} is closed")
            elif self._worker.group_error is not None:  # a sharded model lost a rank
                error = self._worker.group_error
            elif self._pending >= self._max_pending:
                error = EngineBusyError(f"{self._pending} requests pending; try again later")
            else:
                self._pending += 1
                self._worker.submit(submitted)
                return submitted
        self._refuse(submitted, error)
        raise error

    def _sampling_defaults(self) -> dict[str, Any]:
        """What a request that sets nothing gets: the model's generation config, then ours."""
        backend = self._worker.backend
        recommended = backend.generation_defaults if backend is not None else {}
        thinking = backend is not None and bool(backend.tokenizer.has_thinking)
        return {**recommended, "max_tokens": self.max_tokens or default_max_tokens(thinking)}

    def memory(self, timeout: float = 10.0) -> MemoryStats:
        """What the model holds in memory now: MLX's counters, the weights, the prompt cache.

        Read on the worker thread (the only thread that touches MLX), between two steps.

        Raises:
            EngineClosedError: The engine was closed.
            TimeoutError: The worker did not answer within ``timeout`` seconds.
        """
        self._loaded_backend()
        return self._worker.ask(self._worker.memory_stats, timeout)

    def count_tokens(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        tool_choice: ToolChoice | None = None,
        prompt: str | Sequence[int] | None = None,
    ) -> int:
        """Tokens the prompt of such a request would hold, rendered as the request would be.

        The messages go through the chat template with the tools, thinking switch and template
        arguments given (``tool_choice="none"`` hides the tools, as a request does); images
        count as the tokens the model's processor gives them. Nothing is generated and no
        audit row is written. Arguments as :meth:`stream`.

        Raises:
            InvalidRequestError: Messages the template rejects, or images for a text model.
            EngineClosedError: The engine was closed.
        """
        backend = self._loaded_backend()
        if prompt is not None:
            return len(backend.render_text(_raw_prompt(prompt) or "").tokens)
        normalized = normalize_messages(messages, policy=self._image_policy(RequestMeta()))
        self._check_images(normalized.images)
        shown = list(tools) if tools and tool_choice != "none" else None
        template = dict(chat_template_kwargs or {}) or None

        def render(_: Any = None) -> int:
            prompt = backend.render(
                normalized.messages, shown, enable_thinking, template, normalized.images
            )
            return len(prompt.tokens)

        if isinstance(backend, TextBackend):
            return render()
        return self._worker.ask_model(render, None)  # a vision prompt's images run on MLX

    def fits_context(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        max_tokens: int | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> bool:
        """Whether such a request fits the model's context, as the engine checks before any work.

        Its prompt plus ``max_tokens`` (``None``: the default a request gets). Nothing runs on
        the model and nothing is audited; a refused request would be both. Arguments as
        :meth:`count_tokens`.
        """
        limit = self.context_length
        if limit is None:
            return True
        wanted = max_tokens if max_tokens is not None else self._sampling_defaults()["max_tokens"]
        tokens = self.count_tokens(
            messages,
            tools,
            enable_thinking,
            chat_template_kwargs=chat_template_kwargs,
            tool_choice=tool_choice,
        )
        return bool(tokens + wanted <= limit)

    async def afits_context(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> bool:
        """Like :meth:`fits_context`, rendering off the event loop."""
        return await asyncio.to_thread(
            self.fits_context, messages, tools, enable_thinking, **options
        )

    async def acount_tokens(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> int:
        """Like :meth:`count_tokens`, rendering off the event loop."""
        return await asyncio.to_thread(
            self.count_tokens, messages, tools, enable_thinking, **options
        )

    def score(
        self,
        context: str | Sequence[int],
        continuations: Sequence[str | Sequence[int]],
        *,
        timeout: float | None = None,
        meta: RequestMeta | None = None,
    ) -> list[Score]:
        """How likely each continuation is after ``context``, without generating anything.

        The context is prefilled once and shared by a batch of continuations (one model call
        reads them all); each gets the sum of its tokens' log-probabilities, its token count
        and whether greedy decoding would have written it. Texts are encoded as they are (no
        chat template; the context with the tokenizer's special tokens, continuations
        without), so mind the space a continuation starts with; token ids are used as given.
        Runs on the worker thread between decoding steps. The call is one audit row (endpoint
        ``score``; the scores as JSON in ``content``), failed or not.

        Args:
            context: Text, or token ids.
            continuations: Texts, or token-id sequences.
            timeout: Most seconds to wait for the answer.
            meta: Who asks, for the audit row (default: source ``python``).

        Raises:
            InvalidRequestError: A vision model, or an empty context or continuation.
            EngineClosedError: The engine was closed.
            TimeoutError: No answer within ``timeout`` seconds.
        """
        if self.follows:
            raise InvalidRequestError(_FOLLOWER_REFUSAL)
        backend = self._loaded_backend()
        meta = meta or RequestMeta()
        call = ScoreCall(
            meta.request_id or new_request_id(), datetime.now(timezone.utc), context, continuations
        )
        started = time.perf_counter()
        try:
            if backend.kind != "text":
                raise InvalidRequestError(f"{self.model_id} is a vision model: score is for text")
            tokenizer = backend.tokenizer
            context_ids = token_ids(tokenizer, context, special=True)
            continuation_ids = [token_ids(tokenizer, c, special=False) for c in continuations]
            read = len(context_ids) + sum(len(ids) for ids in continuation_ids)
            call = dataclasses.replace(call, tokens=read)
            job = partial(
                score_continuations,
                context=context_ids,
                continuations=continuation_ids,
                prefill_step=self._worker.prefill_step,  # the device's, known once loaded
            )
            scores = self._worker.ask_model(job, timeout)
        except Exception as error:
            duration = time.perf_counter() - started
            record_score(self.audit, meta, self.model_id, call, duration, error=error)
            raise
        duration = time.perf_counter() - started
        record_score(self.audit, meta, self.model_id, call, duration, scores)
        return scores

    async def ascore(
        self,
        context: str | Sequence[int],
        continuations: Sequence[str | Sequence[int]],
        *,
        timeout: float | None = None,
        meta: RequestMeta | None = None,
    ) -> list[Score]:
        """Like :meth:`score`, without blocking the event loop."""
        return await asyncio.to_thread(
            self.score, context, continuations, timeout=timeout, meta=meta
        )

    def _image_policy(self, meta: RequestMeta) -> ImagePolicy:
        remote = self.allow_remote_images
        if meta.trusted:
            return ImagePolicy.for_python(allow_remote_images=remote)
        return ImagePolicy.for_http(allow_remote_images=remote)

    def _check_images(self, images: Sequence[Image]) -> None:
        if images and self.kind != "vision":
            raise no_vision_error(self.model_id, len(images))

    def _refuse(self, request: Request, error: Exception) -> None:
        record_turn(self.audit, request, self.model_id, failed_turn(error), 0.0, error)

    def _on_finished(
        self, request: Request, builder: TurnBuilder, duration: float, error: BaseException | None
    ) -> None:
        with self._lock:
            self._pending -= 1
            self.requests_served += 1
        record_turn(self.audit, request, self.model_id, builder, duration, error)

    async def stream(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: RequestMeta | None = None,
        prompt: str | Sequence[int] | None = None,
        json_schema: Mapping[str, Any] | type | None = None,
        response_format: Any = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        tool_choice: ToolChoice | None = None,
        parallel_tool_calls: bool = True,
        prefill_progress: bool = False,
        **sampling: Any,
    ) -> AsyncIterator[Event]:
        """Generate a reply as an async stream of events.

        Closing the generator (``break``, ``aclose()``, cancelling the consuming task) cancels
        generation within one step and records the turn as cancelled.

        Args:
            messages: OpenAI-style chat messages.
            tools: OpenAI-style tool definitions offered to the model.
            enable_thinking: Passed to the chat template (``None`` = the template's default).
            meta: Who asks, for the audit row (default: source ``python``).
            prompt: Raw completion: no chat template, ``messages`` ignored. Text is encoded as
                mlx-lm does; a sequence of token ids is used as it is (no BOS added), and
                must hold integers in the tokenizer's range.
            json_schema: The answer must be JSON matching this schema (``{"type": "object"}``
                for any object); reasoning stays free.
            response_format: The same as a pydantic model class, a JSON schema or OpenAI's
                ``{"type": "json_schema", "json_schema": {...}}``; :meth:`generate` then
                parses the answer into ``Turn.parsed`` (the audit row's ``sampling`` names
                the schema).
            chat_template_kwargs: Further chat-template arguments.
            tool_choice: ``"auto"`` (default: the model decides), ``"none"`` (the tools are
                hidden), ``"required"`` (the answer is tool calls) or ``{"name": "fn"}`` (calls
                of ``fn``); forced calls follow the model's own format and each tool's JSON
                schema, after free reasoning. Models whose calls are not JSON between markers
                refuse forced calls.
            parallel_tool_calls: ``False``: at most one tool call (generation ends after it).
            prefill_progress: Also yield :class:`~mlxnb.events.PrefillProgress` events while
                the prompt is processed (before the first token).
            **sampling: ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``min_p``,
                ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``, ``seed``,
                ``stop``, ``logit_bias``, ``logits_processors`` (see :class:`SamplingOptions`);
                ``None`` means the default.

        Yields:
            ThinkingDelta, ContentDelta, ToolCallDelta, ToolCall, ToolCallError, then Done.

        Raises:
            EngineClosedError: The engine was closed.
            EngineBusyError: Too many requests are pending.
            InvalidRequestError: The request is malformed (an unknown option included).
            GenerationError: The worker failed while generating.
        """
        shape = requested_format({"json_schema": json_schema, "response_format": response_format})
        options = RequestOptions(
            meta or RequestMeta(),
            _raw_prompt(prompt),
            None if shape is None else shape.schema,
            chat_template_kwargs,
            sampling,
            tool_choice,
            parallel_tool_calls,
            prefill_progress,
            None if shape is None else shape.name,
        )
        if not self.ready:
            await self.await_ready()
        sink = AsyncSink(asyncio.get_running_loop())
        request = await self._submit_off_loop(sink, messages, tools, enable_thinking, options)
        try:
            while True:
                events, done = unpack(await sink.get())
                for event in events:
                    yield event
                if done:
                    return
        finally:
            request.cancel.set()

    async def _submit_off_loop(
        self,
        sink: AsyncSink,
        messages: Messages,
        tools: Tools,
        enable_thinking: bool | None,
        options: RequestOptions,
    ) -> Request:
        """:meth:`_submit` on a helper thread; cancel what it submits if the caller left.

        Rendering a prompt (and decoding images) must not stall the caller's event loop: a
        server's burst of requests then renders in parallel (the tokenizer encodes without
        the GIL) instead of reaching the worker one after another. It touches no MLX. The
        threads are the engines' own, not the loop's default executor, which other waits
        (``ascore``, a notebook's own ``asyncio.to_thread`` calls) may fill.
        """
        arguments = (sink, messages, tools, enable_thinking, options)
        loop = asyncio.get_running_loop()
        submitting = loop.run_in_executor(_SUBMITTERS, partial(self._submit, *arguments))
        try:
            return await asyncio.shield(submitting)
        except asyncio.CancelledError:
            submitting.add_done_callback(_cancel_if_submitted)
            raise

    def stream_sync(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: RequestMeta | None = None,
        prompt: str | Sequence[int] | None = None,
        json_schema: Mapping[str, Any] | type | None = None,
        response_format: Any = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        tool_choice: ToolChoice | None = None,
        parallel_tool_calls: bool = True,
        prefill_progress: bool = False,
        **sampling: Any,
    ) -> Iterator[Event]:
        """Blocking twin of :meth:`stream` for scripts and threads; same arguments and events."""
        shape = requested_format({"json_schema": json_schema, "response_format": response_format})
        options = RequestOptions(
            meta or RequestMeta(),
            _raw_prompt(prompt),
            None if shape is None else shape.schema,
            chat_template_kwargs,
            sampling,
            tool_choice,
            parallel_tool_calls,
            prefill_progress,
            None if shape is None else shape.name,
        )
        sink = SyncSink()
        self.wait_ready()
        request = self._submit(sink, messages, tools, enable_thinking, options)
        try:
            while True:
                try:
                    item = sink.get(timeout=0.1)
                except queue.Empty:
                    continue
                events, done = unpack(item)
                yield from events
                if done:
                    return
        finally:
            request.cancel.set()

    def generate(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> Turn:
        """Generate a whole reply, blocking; returns the finished :class:`~mlxnb.events.Turn`.

        Ctrl-C (or a kernel interrupt) cancels the request. Same arguments as :meth:`stream`.
        """
        turn = collect(self.stream_sync(messages, tools, enable_thinking, **options))
        return with_parsed(turn, options)

    async def agenerate(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> Turn:
        """Awaitable twin of :meth:`generate`."""
        turn = await acollect(self.stream(messages, tools, enable_thinking, **options))
        return with_parsed(turn, options)

    # -- lifetime --------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker; pending requests end with :class:`EngineClosedError`. Idempotent.

        A follower rank of a sharded model closes when rank 0's engine does, not here.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.follows:
            return
        self._worker.stop()
        self._worker.finished.wait(timeout)

    def close_if_idle(self) -> bool:
        """Close the engine only if no request is queued or running; returns whether it did.

        Atomic with submission: a request arriving meanwhile either runs first (and the engine
        stays open) or is refused with :class:`EngineClosedError`.
        """
        with self._lock:
            if self._closed or self._pending:
                return self._closed
            self._closed = True
        self._worker.stop()
        self._worker.finished.wait(10.0)
        return True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def follows(self) -> bool:
        """Whether this engine is a follower: a rank other than 0 of a sharded model."""
        return self._lockstep is not None and not self._lockstep.leads

    def follow(self) -> int:
        """On a follower: run in step with rank 0 until its engine closes (blocks).

        Returns:
            0 once rank 0 closed its engine, 1 when the group failed (rank 0 is gone).
        """
        self._worker.finished.wait()
        return 0 if self._worker.group_error is None else 1

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("ready" if self.ready else "loading")
        return f"Engine({self.model_id!r}, {state}, pending={self._pending})"


_SUBMITTERS = ThreadPoolExecutor(
    max_workers=max(2, min(8, os.cpu_count() or 1)), thread_name_prefix="mlxnb-submit"
)
"""Where async callers' requests are submitted (rendered, checked): one thread per core, at
least 2 and at most 8. Threads start on first use."""

_FOLLOWER_REFUSAL = (
    "this process is not rank 0 of the sharded model: requests go to rank 0's engine; here, "
    "call engine.follow() (mlxnb.load does)"
)


def _raw_prompt(prompt: str | Sequence[int] | None) -> str | tuple[Any, ...] | None:
    """A raw prompt as the request keeps it: token ids copied (the worker checks them)."""
    return prompt if prompt is None or isinstance(prompt, str) else tuple(prompt)


def _cancel_if_submitted(submitting: asyncio.Future[Request]) -> None:
    """Cancel the request a caller stopped waiting for, once its submission ends."""
    if not submitting.cancelled() and submitting.exception() is None:
        submitting.result().cancel.set()
