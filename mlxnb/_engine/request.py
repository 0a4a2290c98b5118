"""A generation request as it travels from a caller to the worker: sampling, who asked, what.

Values only; how events travel back lives in :mod:`mlxnb._engine.delivery`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from mlxnb._engine.backend import Prompt
from mlxnb._engine.delivery import AsyncSink, SyncSink
from mlxnb._images import Image
from mlxnb.errors import InvalidRequestError, UnknownOptionError

MAX_TOP_LOGPROBS = 20
"""Most alternatives a token's log-probability entry lists (OpenAI's limit)."""


@dataclass(frozen=True)
class SamplingOptions:
    """Per-request sampling settings.

    Attributes:
        max_tokens: Most tokens to generate.
        temperature: 0 means greedy.
        top_p: Nucleus sampling mass (1.0 = off).
        top_k: Keep the k most likely tokens (0 = off).
        min_p: Drop tokens below ``min_p`` times the top probability (0 = off).
        repetition_penalty: Multiplicative penalty on recent tokens (None = off).
        presence_penalty: Additive penalty on tokens already present (None = off).
        frequency_penalty: Additive penalty proportional to frequency (None = off).
        seed: The request's own random key per position: the same tokens alone, in any batch
            or arrival order (on the same model, machine and settings).
        stop: Strings that end the output (not included in it).
        logits_processors: Extra mlx-lm logits processors for this request.
        logit_bias: ``(token id, bias)`` pairs added to the logits (OpenAI's ``logit_bias``;
            -100 bans a token, +100 all but forces it).
        thinking_budget: Most tokens inside a thinking block; then its closing marker is
            forced and the answer follows (``None``: no budget; ``0``: close it at once).
        logprobs: Send a :class:`~mlxnb.events.TokenLogprob` per generated token (and keep
            them in ``Turn.logprobs``).
        top_logprobs: How many of the most likely tokens each of those lists (0 to 20; more
            than 0 turns ``logprobs`` on).
        prompt_lookup: Prompt-lookup decoding while the request runs alone: up to this many
            tokens drafted per step from earlier n-grams of the prompt and answer, checked in
            one model call (``0``: off). The output is unchanged; see :mod:`mlxnb._engine.lookup`.
    """

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logits_processors: tuple[Any, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    thinking_budget: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    prompt_lookup: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (
                self.repetition_penalty is None or self.repetition_penalty > 0,
                "repetition_penalty must be > 0",
            ),
            (all(isinstance(s, str) for s in self.stop), "stop must be strings"),
            (
                self.thinking_budget is None
                or (isinstance(self.thinking_budget, int) and self.thinking_budget >= 0),
                "thinking_budget must be a whole number >= 0",
            ),
            (
                isinstance(self.top_logprobs, int) and 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                f"top_logprobs must be a whole number from 0 to {MAX_TOP_LOGPROBS}",
            ),
            (
                isinstance(self.prompt_lookup, int) and 0 <= self.prompt_lookup <= 64,
                "prompt_lookup must be a whole number of draft tokens from 0 to 64",
            ),
            (
                all(isinstance(t, int) and t >= 0 and -100 <= b <= 100 for t, b in self.logit_bias),
                "logit_bias maps token ids (integers >= 0) to biases from -100 to 100",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)

    @property
    def wants_logprobs(self) -> bool:
        """Whether the request asked for log-probabilities (``top_logprobs`` implies it)."""
        return bool(self.logprobs) or self.top_logprobs > 0


UNCHECKED_OPTIONS = SamplingOptions()
"""A request's options until they are validated (a refused request records no settings)."""

MAX_TOKENS = 1024
"""Default ``max_tokens`` for a model that does not think."""
THINKING_MAX_TOKENS = 4096
"""Default ``max_tokens`` for a model that thinks: its reasoning comes out of the same budget."""


def default_max_tokens(thinking: bool) -> int:
    """The ``max_tokens`` a request gets when neither it nor the engine sets one."""
    return THINKING_MAX_TOKENS if thinking else MAX_TOKENS


def effective_settings(options: SamplingOptions) -> dict[str, Any]:
    """The settings a request ran with, as plain JSON values (for its audit row).

    Logits processors and ``logit_bias`` entries are counted, not listed (code, and a table
    that may cover the vocabulary).
    """
    settings: dict[str, Any] = {
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "repetition_penalty": options.repetition_penalty,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
        "seed": options.seed,
    }
    if options.stop:
        settings["stop"] = list(options.stop)
    if options.logit_bias:
        settings["logit_bias"] = len(options.logit_bias)
    if options.logits_processors:
        settings["logits_processors"] = len(options.logits_processors)
    if options.prompt_lookup:
        settings["prompt_lookup"] = options.prompt_lookup
    if options.wants_logprobs:
        settings["top_logprobs"] = options.top_logprobs
    return settings


@dataclass(frozen=True)
class RequestMeta:
    """Who asks, for the audit row: the one value every front door fills in.

    Attributes:
        source: ``widget``, ``python``, ``eval``, ``server`` or ``magic`` (the cell magic).
        conversation_id: Groups the turns of one conversation.
        endpoint: The HTTP route or API used.
        client: The HTTP client's address.
        run_id: The evaluation run.
        request_id: The id to record (``None``: a new one per request).
        trusted: The caller runs in this process (Python, the widget, ``evaluate()``), so
            image paths may be read; ``False`` for HTTP requests, which may never make the
            kernel read a local file.
        sample_group: Shared by requests that are samples of one prompt (``n`` of them): the
            engine prefills the prompt once for all (:mod:`mlxnb._engine.forks`).
    """

    source: str = "python"
    conversation_id: str | None = None
    endpoint: str | None = None
    client: str | None = None
    run_id: str | None = None
    request_id: str | None = None
    trusted: bool = True
    sample_group: str | None = None


@dataclass
class Request:
    """One request in flight; the worker owns it once submitted (except ``cancel``).

    Attributes:
        messages: OpenAI-style chat messages, normalised (empty for a raw ``prompt``).
        tools: Tool definitions for the chat template.
        enable_thinking: Passed to the chat template (``None`` = its default).
        template_kwargs: Further chat-template arguments.
        options: Sampling settings.
        meta: Who asked.
        request_id: This request's id (from ``meta`` or new).
        sink: Where its events go.
        prompt: A raw completion prompt (no chat template): text or token ids, else ``None``.
        grammar: A compiled JSON-schema grammar the answer must follow, else ``None``.
        schema_name: The response format's name, for the audit row (``None``: none asked).
        fork_key: Shared by the samples of one prompt: they prefill it once
            (:mod:`mlxnb._engine.forks`).
        images: The images the messages carry, in order (vision models only).
        prefill_progress: Send :class:`~mlxnb.events.PrefillProgress` events while prefilling.
        rendered: The prompt, when the caller's thread rendered it (a loaded text model);
            ``None``: the worker renders it.
        cancel: Set by the consumer to stop generation at the next step.
        submitted: ``perf_counter`` time of submission.
        started_at: Wall-clock time of submission (UTC).
    """

    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[Mapping[str, Any]] | None
    enable_thinking: bool | None
    template_kwargs: Mapping[str, Any] | None
    options: SamplingOptions
    meta: RequestMeta
    request_id: str
    sink: AsyncSink | SyncSink
    prompt: str | tuple[Any, ...] | None = None
    grammar: str | None = None
    schema_name: str | None = None
    fork_key: str | None = None
    images: tuple[Image, ...] = ()
    prefill_progress: bool = False
    rendered: Prompt | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def sampling_options(defaults: Mapping[str, Any], sampling: Mapping[str, Any]) -> SamplingOptions:
    """Validate per-request sampling settings over the engine's defaults.

    Args:
        defaults: The engine's defaults (``max_tokens``).
        sampling: What the caller passed; ``None`` values mean "the default".

    Raises:
        InvalidRequestError: An unknown option, or a value out of range.
    """
    known = SamplingOptions.__dataclass_fields__
    unknown = sorted(set(sampling) - set(known))
    if unknown:
        raise UnknownOptionError(
            f"unknown generation option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {**defaults, **{k: v for k, v in sampling.items() if v is not None}}
    stop = values.get("stop", ())
    values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    values["logits_processors"] = tuple(values.get("logits_processors", ()))
    bias = values.get("logit_bias") or {}
    try:
        values["logit_bias"] = tuple(sorted((int(t), float(b)) for t, b in dict(bias).items()))
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(f"logit_bias must map token ids to numbers: {error}") from error
    return SamplingOptions(**values)


@dataclass(frozen=True)
class RequestOptions:
    """The keyword arguments of :meth:`Engine.stream` other than sampling, gathered once.

    ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or a named function (see
    :mod:`mlxnb._engine.tool_choice`); ``parallel_tool_calls=False`` allows at most one call.
    """

    meta: RequestMeta
    prompt: str | tuple[Any, ...] | None
    json_schema: Mapping[str, Any] | None
    chat_template_kwargs: Mapping[str, Any] | None
    sampling: Mapping[str, Any]
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool = True
    prefill_progress: bool = False
    schema_name: str | None = None
