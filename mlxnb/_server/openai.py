"""OpenAI wire format: validated requests → engine arguments, events → chunks and bodies.

Pure translation with no I/O and no MLX, so every shape the server sends is testable on its own.
The server (:mod:`mlxnb._server`) owns HTTP; this module only turns values into values.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from mlxnb._engine.request import RequestMeta
from mlxnb._server.schemas import (
    ChatCompletionRequest,
    _Sampling,
)
from mlxnb._server.tool_stream import ToolCallWire
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    ThinkingDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolCallError,
    collect,
)
from mlxnb.events import Usage as EngineUsage

Prompt = str | tuple[int, ...]
"""One raw completion prompt: text, or token ids passed to the engine as they are."""


@dataclass(frozen=True)
class EngineCall:
    """What one HTTP request asks of the engine.

    Attributes:
        messages: Chat messages (empty for a text completion).
        tools: Tool definitions for the chat template.
        enable_thinking: ``chat_template_kwargs["enable_thinking"]`` when given.
        options: Sampling options, ``chat_template_kwargs``, ``tool_choice`` and
            ``parallel_tool_calls`` (when set) for ``engine.stream``.
        json_schema: Schema the answer must match (``{}`` for any JSON object; ``None`` = free).
        prompts: The raw prompts of a text completion (empty for a chat).
        n: Choices per prompt.
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    enable_thinking: bool | None
    options: dict[str, Any]
    json_schema: dict[str, Any] | None = None
    prompts: tuple[Prompt, ...] = ()
    n: int = 1

    def stream(
        self, engine: Any, meta: RequestMeta, *, streamed: bool, sample: int = 0
    ) -> AsyncIterator[Event]:
        """Ask ``engine`` for this chat call's events (prefill progress only when streamed).

        ``sample`` is the choice's index among ``n``: a seeded request gives each its own seed.
        """
        options = self.options
        if sample and options.get("seed") is not None:
            options = {**options, "seed": sample_seed(options["seed"], sample)}
        stream: AsyncIterator[Event] = engine.stream(
            self.messages,
            self.tools,
            self.enable_thinking,
            meta=meta,
            json_schema=self.json_schema,
            prefill_progress=streamed,
            **options,
        )
        return stream

    async def count_tokens(self, engine: Any) -> int:
        """The tokens of this chat call's prompt on ``engine``, rendered as :meth:`stream`'s."""
        rendering = ("chat_template_kwargs", "tool_choice")
        options = {name: self.options[name] for name in rendering if name in self.options}
        tokens: int = await engine.acount_tokens(
            self.messages, self.tools, self.enable_thinking, **options
        )
        return tokens

    def choices(self) -> list[tuple[Prompt, dict[str, Any]]]:
        """Each choice of a text completion as ``(prompt, options)``, in OpenAI's order.

        Choice ``i * n + j`` is sample ``j`` of prompt ``i``; a seeded request gives each
        sample its own seed (:func:`sample_seed`).
        """
        seed = self.options.get("seed")
        return [
            (
                prompt,
                self.options if seed is None else {**self.options, "seed": sample_seed(seed, j)},
            )
            for prompt in self.prompts
            for j in range(self.n)
        ]


def sample_seed(seed: int, sample: int) -> int:
    """The seed of sample ``sample`` (0-based) of one prompt in a request seeded with ``seed``.

    OpenAI's ``n`` asks for independent samples, so the samples of one prompt must not share a
    seed, yet a seeded request must be reproducible. Sample 0 keeps the request's seed (``n=1``
    is unchanged); sample ``j`` adds ``j`` times an odd constant (2**32 over the golden ratio)
    modulo 2**32, a fixed spread that keeps it apart from the seeds ``seed + 1``, ``seed + 2``
    … a client is likely to use for its next requests.
    """
    return (seed + sample * 0x9E3779B9) % 2**32


def sampling_fields(request: _Sampling, max_tokens: int | None) -> dict[str, Any]:
    """The engine's sampling options from a chat or completion body's sampling fields."""
    options: dict[str, Any] = {"max_tokens": max_tokens}
    for name in ("temperature", "top_p", "min_p", "seed", "repetition_penalty", "prompt_lookup"):
        if (value := getattr(request, name)) is not None:
            options[name] = value
    for name in ("presence_penalty", "frequency_penalty"):
        if value := getattr(request, name):  # 0 means off; skip building a processor
            options[name] = value
    if request.top_k is not None:
        options["top_k"] = max(request.top_k, 0)  # -1 means off, as in vLLM
    if request.stop is not None:
        options["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.logit_bias:
        options["logit_bias"] = {int(token): bias for token, bias in request.logit_bias.items()}
    return options


def _chat_logprobs(request: ChatCompletionRequest) -> dict[str, Any]:
    if not request.logprobs and not request.top_logprobs:
        return {}
    return {"logprobs": True, "top_logprobs": request.top_logprobs or 0}


EFFORT_BUDGETS: dict[str, int | None] = {
    "none": 0,
    "minimal": 0,
    "low": 1024,
    "medium": 4096,
    "high": None,
    "xhigh": None,
}
"""Thinking tokens allowed per ``reasoning_effort`` (``None``: no budget; 0: thinking off)."""


def effort_options(effort: str | None) -> tuple[bool | None, dict[str, Any]]:
    """``reasoning_effort`` as the thinking switch and the engine's ``thinking_budget``."""
    if effort is None:
        return None, {}
    budget = EFFORT_BUDGETS.get(effort)
    if budget == 0:
        return False, {}
    return True, {} if budget is None else {"thinking_budget": budget}


def chat_call(request: ChatCompletionRequest) -> EngineCall:
    """Translate a chat request into engine arguments."""
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    tools = [t.model_dump(exclude_none=True) for t in request.tools or []] or None
    kwargs = dict(request.chat_template_kwargs or {})
    if continues_final_message(request):
        kwargs["continue_final_message"] = True
    thinking = kwargs.pop("enable_thinking", None)
    options = sampling_fields(request, request.max_completion_tokens or request.max_tokens)
    options.update(_chat_logprobs(request))
    if thinking is None:
        thinking, budget = effort_options(request.reasoning_effort)
        options.update(budget)
    if kwargs:
        options["chat_template_kwargs"] = kwargs
    # The engine enforces both (a named or required choice constrains generation); passed only
    # when set, so an engine that predates them still serves plain requests.
    if request.tool_choice is not None:
        options["tool_choice"] = tool_choice(request)
    if request.parallel_tool_calls is False:
        options["parallel_tool_calls"] = False
    schema: dict[str, Any] | None = None
    if request.response_format is not None and request.response_format.type != "text":
        spec = request.response_format.json_schema
        schema = {"type": "object"} if request.response_format.type == "json_object" else {}
        if request.response_format.type == "json_schema":
            schema = spec.schema_ if spec is not None else {}
    return EngineCall(
        messages, tools, thinking if isinstance(thinking, bool) else None, options, schema
    )


def continues_final_message(request: ChatCompletionRequest) -> bool:
    """Whether the request carries on its final (assistant) message.

    Asked by vLLM's field or by the same key in ``chat_template_kwargs``.
    """
    kwargs = request.chat_template_kwargs or {}
    return bool(request.continue_final_message or kwargs.get("continue_final_message"))


def tool_choice(request: ChatCompletionRequest) -> str | dict[str, Any] | None:
    """The request's ``tool_choice`` as the engine takes it (a named one as a plain dict)."""
    choice = request.tool_choice
    return choice if choice is None or isinstance(choice, str) else choice.model_dump()


# -- responses -------------------------------------------------------------------------------


def usage_body(usage: EngineUsage) -> dict[str, Any]:
    """Token counts in OpenAI's ``usage`` shape, cached prompt tokens included."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            # OpenAI's names for predicted-output tokens; here the drafts of prompt lookup.
            "accepted_prediction_tokens": usage.accepted_draft_tokens,
            "rejected_prediction_tokens": usage.draft_tokens - usage.accepted_draft_tokens,
        },
    }


def total_usage(usages: Sequence[EngineUsage], n: int = 1) -> EngineUsage:
    """The usage of a request's choices as one, counted as OpenAI counts ``n``.

    Completion tokens of every choice add up; prompt (and cached) tokens count once per prompt,
    from its first choice, although the engine processes each sample's prompt on its own.

    Args:
        usages: Each choice's usage, in choice order (``n`` consecutive choices per prompt).
        n: Choices per prompt.
    """
    firsts = usages[::n]
    return EngineUsage(
        prompt_tokens=sum(u.prompt_tokens for u in firsts),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cached_tokens=sum(u.cached_tokens for u in firsts),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        draft_tokens=sum(u.draft_tokens for u in usages),
        accepted_draft_tokens=sum(u.accepted_draft_tokens for u in usages),
    )


def usage_chunk(
    *, id: str, object: str, created: int, model: str, usage: EngineUsage
) -> dict[str, Any]:
    """The usage-only chunk that closes a stream when ``stream_options.include_usage`` is set."""
    return {
        "id": id,
        "object": object,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_body(usage),
    }


def finish_reason(reason: str) -> str:
    """Map an engine finish reason onto OpenAI's (a cancelled turn reads as ``stop``)."""
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


def model_card(model_id: str, created: int) -> dict[str, Any]:
    """One entry of ``GET /v1/models``, in OpenAI's shape and Anthropic's at once.

    Both APIs list models at the same path; each SDK reads its own fields and ignores the
    other's (``object``/``created``/``owned_by``; ``type``/``display_name``/``created_at``).
    """
    stamp = datetime.fromtimestamp(created, timezone.utc).isoformat().replace("+00:00", "Z")
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "mlxnb",
        "type": "model",
        "display_name": model_id,
        "created_at": stamp,
        "lifecycle": "active",
    }


@dataclass
class ChatChunks:
    """Translates one stream of engine events into ``chat.completion.chunk`` bodies.

    Args:
        id: The completion id shared by every chunk.
        model: The model name to report.
        include_usage: Add a final usage-only chunk (``stream_options.include_usage``).
        created: Unix time of the request.
        index: The choice these chunks carry (one translator per choice when ``n`` > 1).
        usage_chunk: Send the usage chunk itself (``False``: the caller sums the choices').
    """

    id: str
    model: str
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    index: int = 0
    usage_chunk: bool = True
    _tools: ToolCallWire = field(default_factory=ToolCallWire, init=False, repr=False)
    _logprobs: list[TokenLogprob] = field(default_factory=list, init=False, repr=False)

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A chunk carrying ``delta`` (and a finish reason on the last one).

        Log-probabilities of tokens seen since the last chunk ride on it.
        """
        logprobs = chat_logprobs(self._logprobs) if self._logprobs else None
        self._logprobs = []
        choice = {
            "index": self.index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish,
        }
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if self.include_usage:
            body["usage"] = None
        return body

    def start(self) -> dict[str, Any]:
        """The opening chunk, announcing the assistant role."""
        return self.chunk({"role": "assistant", "content": ""})

    def event(self, event: Event) -> list[dict[str, Any]]:
        """The chunks for one event; tool calls stream as written (:mod:`.tool_stream`)."""
        if isinstance(event, TokenLogprob):
            self._logprobs.append(event)
            return []
        if isinstance(event, ContentDelta):
            return [self.chunk({"content": event.text})]
        if isinstance(event, ThinkingDelta):
            return [self.chunk({"reasoning_content": event.text})]
        if isinstance(event, ToolCallDelta | ToolCall | ToolCallError):
            entries = self._tools.feed(event)
            chunks = [self.chunk({"tool_calls": entries})] if entries else []
            if isinstance(event, ToolCallError):
                # Like other OpenAI-compatible servers: an unparseable call stays visible as text.
                chunks.append(self.chunk({"content": event.raw}))
            return chunks
        if isinstance(event, Done):
            return self.done(event)
        return []

    def done(self, event: Done) -> list[dict[str, Any]]:
        """The closing chunk, then the usage chunk when asked for."""
        chunks = [self.chunk({}, finish_reason(event.finish_reason))]
        if self.include_usage and self.usage_chunk:
            chunks.append(
                usage_chunk(
                    id=self.id,
                    object="chat.completion.chunk",
                    created=self.created,
                    model=self.model,
                    usage=event.usage,
                )
            )
        return chunks


def chat_completion(events: list[Event], *, id: str, model: str, created: int) -> dict[str, Any]:
    """A finished stream of events as a ``chat.completion`` body (same text as streamed).

    Tool-call arguments are the strings the stream sends (:mod:`.tool_stream`).
    """
    turn = collect(events)
    tools = ToolCallWire()
    for event in events:
        tools.feed(event)
    content = "".join(
        e.text if isinstance(e, ContentDelta) else e.raw
        for e in events
        if isinstance(e, ContentDelta | ToolCallError)
    )
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if turn.reasoning:
        message["reasoning_content"] = turn.reasoning
    if tools.calls:
        message["tool_calls"] = [call.to_openai() for call in tools.calls]
        message["content"] = content or None
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": chat_logprobs(turn.logprobs) if turn.logprobs else None,
                "finish_reason": finish_reason(turn.finish_reason),
            }
        ],
        "usage": usage_body(turn.usage),
    }


def chat_completions(
    choices: Sequence[list[Event]], *, id: str, model: str, created: int
) -> dict[str, Any]:
    """Several choices' finished events as one ``chat.completion`` (prompt counted once)."""
    bodies = [chat_completion(events, id=id, model=model, created=created) for events in choices]
    body = bodies[0]
    body["choices"] = [{**each["choices"][0], "index": index} for index, each in enumerate(bodies)]
    usages = [collect(events).usage for events in choices]
    body["usage"] = usage_body(total_usage(usages, len(choices)))
    return body


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's ``logprobs`` object: one ``content`` entry per token."""
    return {"content": [entry.to_openai() for entry in entries], "refusal": None}


def sse(body: Mapping[str, Any] | str) -> bytes:
    """One server-sent event (``data: …`` and a blank line)."""
    data = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
