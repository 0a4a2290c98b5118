"""Typed events produced by a generation stream.

Every front door (widget, HTTP server, evaluation loops, plain Python) consumes the same
vocabulary. Events are frozen dataclasses; ``dataclasses.asdict(event)`` is the wire form and
carries a ``type`` discriminator.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass(frozen=True)
class Usage:
    """Token counts and timings of one turn (OpenAI names where they exist).

    Attributes:
        prompt_tokens: Tokens in the rendered prompt.
        completion_tokens: Tokens generated.
        cached_tokens: Prompt tokens served from the prompt cache (not recomputed).
        time_to_first_token: Seconds from the request entering the engine to the first token.
        prompt_tps: Prompt tokens processed per second.
        generation_tps: Generated tokens per second (after the first token).
        peak_memory_gb: Peak MLX memory in GB during the turn.
        reasoning_tokens: Of the generated tokens, those inside a thinking block.
        draft_tokens: Tokens drafted by prompt-lookup decoding (``prompt_lookup=``).
        accepted_draft_tokens: Of those, how many the model confirmed (each saved a step).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    time_to_first_token: float | None = None
    prompt_tps: float | None = None
    generation_tps: float | None = None
    peak_memory_gb: float | None = None
    # Added later, so positional construction of the fields above keeps its meaning.
    reasoning_tokens: int = 0
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def draft_acceptance(self) -> float | None:
        """Accepted ÷ drafted tokens, or ``None`` when nothing was drafted."""
        return self.accepted_draft_tokens / self.draft_tokens if self.draft_tokens else None


@dataclass(frozen=True)
class ThinkingDelta:
    """A piece of the model's reasoning text."""

    text: str
    type: Literal["thinking"] = field(default="thinking", init=False)


@dataclass(frozen=True)
class ContentDelta:
    """A piece of the visible answer."""

    text: str
    type: Literal["content"] = field(default="content", init=False)


@dataclass(frozen=True)
class ToolCallDelta:
    """Raw text of a tool call as it streams (for live display), before parsing.

    Attributes:
        index: Position of the call within the turn (0-based).
        text: The next piece of the call's raw text.
    """

    index: int
    text: str
    type: Literal["tool_call_delta"] = field(default="tool_call_delta", init=False)


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call.

    Attributes:
        index: Position of the call within the turn (0-based).
        id: A unique id, as OpenAI's ``tool_call_id``.
        name: The function name.
        arguments: The decoded arguments.
    """

    index: int
    id: str
    name: str
    arguments: dict[str, Any]
    type: Literal["tool_call"] = field(default="tool_call", init=False)

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's ``tool_calls`` shape (arguments as a JSON string)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {
                "name": self.name,
                "arguments": json.dumps(self.arguments, ensure_ascii=False),
            },
        }


@dataclass(frozen=True)
class ToolCallError:
    """A tool call that could not be parsed. Generation goes on; nothing is raised.

    Attributes:
        index: Position of the call within the turn (0-based).
        raw: The call's raw text.
        message: Why it could not be parsed.
    """

    index: int
    raw: str
    message: str
    type: Literal["tool_call_error"] = field(default="tool_call_error", init=False)


@dataclass(frozen=True)
class PrefillProgress:
    """How much of the prompt is processed, before the first token.

    Sent only to requests that ask (``engine.stream(..., prefill_progress=True)``; the server's
    streaming endpoints do, to keep clients from timing out on long prompts); a turn's fold
    ignores it.

    Attributes:
        processed: Prompt tokens processed (or being processed) so far.
        total: Prompt tokens in all.
    """

    processed: int
    total: int
    type: Literal["prefill"] = field(default="prefill", init=False)


@dataclass(frozen=True)
class TopLogprob:
    """One of the most likely tokens at a position.

    Attributes:
        token: Its text.
        id: Its token id.
        logprob: Its log-probability (natural log) after the request's logits processors.
    """

    token: str
    id: int
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token, and the most likely tokens at its place.

    Sent only to requests that ask (``logprobs=True``, ``top_logprobs=k``), one per generated
    token in order, each just before the text that token adds (the text may come later: the
    parser holds back what might be a marker). Log-probabilities are those the sampler saw: after
    logits processors, penalties and ``logit_bias``, before temperature.

    Attributes:
        token: The generated token's text.
        id: Its token id (-1 from a remote endpoint, whose wire carries none).
        logprob: Its log-probability (natural log).
        top_logprobs: The ``k`` most likely tokens there, most likely first.
        reasoning: Whether the token belongs to a thinking block (its markers included), not
            to the answer.
    """

    token: str
    id: int
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()
    reasoning: bool = False
    type: Literal["logprob"] = field(default="logprob", init=False)

    def to_openai(self) -> dict[str, Any]:
        """The entry in OpenAI's ``logprobs.content`` shape (``-inf`` as OpenAI's -9999.0)."""
        return {
            "token": self.token,
            "logprob": json_logprob(self.logprob),
            "bytes": list(self.token.encode("utf-8")),
            "top_logprobs": [
                {
                    "token": t.token,
                    "logprob": json_logprob(t.logprob),
                    "bytes": list(t.token.encode("utf-8")),
                }
                for t in self.top_logprobs
            ],
        }


LOGPROB_FLOOR = -9999.0
"""What OpenAI's API reports for a token that cannot occur (JSON has no infinity)."""


def json_logprob(value: float) -> float:
    """``value`` with impossible (``-inf``) and non-numeric values as :data:`LOGPROB_FLOOR`."""
    return value if math.isfinite(value) and value > LOGPROB_FLOOR else LOGPROB_FLOOR


@dataclass(frozen=True)
class Done:
    """The last event of every stream.

    Attributes:
        finish_reason: ``stop``, ``length``, ``tool_calls``, ``cancelled`` or ``error``.
        usage: Token counts and timings.
        error: The error message when ``finish_reason == "error"``.
        stop_sequence: The stop string that ended the output, when one did.
    """

    finish_reason: FinishReason
    usage: Usage
    error: str | None = None
    stop_sequence: str | None = None
    type: Literal["done"] = field(default="done", init=False)


Event = (
    ThinkingDelta
    | ContentDelta
    | ToolCallDelta
    | ToolCall
    | ToolCallError
    | PrefillProgress
    | TokenLogprob
    | Done
)
"""Any event of a generation stream."""

Delta = ThinkingDelta | ContentDelta | ToolCallDelta
"""The events that carry a piece of streamed text."""


def continues_text(event: Event, delta: Delta) -> TypeGuard[Delta]:
    """Whether ``event`` is more text of ``delta``'s kind (and of the same tool call)."""
    if isinstance(event, ToolCallDelta):
        return isinstance(delta, ToolCallDelta) and event.index == delta.index
    return type(event) is type(delta)


def joined_run(run: Sequence[Delta]) -> Delta:
    """One delta holding the text of ``run`` (the first itself when it is alone).

    Args:
        run: Consecutive deltas of one kind, each continuing the one before
            (:func:`continues_text`).
    """
    first = run[0]
    return first if len(run) == 1 else replace(first, text="".join(delta.text for delta in run))


@dataclass(frozen=True)
class Turn:
    """A finished turn: what :meth:`Engine.generate` returns.

    Attributes:
        content: The visible answer.
        reasoning: The reasoning text ("" when the model did not think).
        tool_calls: Parsed tool calls, in order.
        tool_call_errors: Tool calls that could not be parsed.
        finish_reason: Why generation ended.
        usage: Token counts and timings.
        error: Error message for ``finish_reason == "error"``.
        logprobs: One entry per generated token when the request asked (``logprobs=True``),
            else empty.
        parsed: With a response format (``response_format=``), the answer parsed: an
            instance of the pydantic model given, or JSON values; ``None`` otherwise, or when
            the answer does not parse (cut short by ``max_tokens``).
    """

    content: str
    reasoning: str
    tool_calls: tuple[ToolCall, ...]
    tool_call_errors: tuple[ToolCallError, ...]
    finish_reason: FinishReason
    usage: Usage
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    parsed: Any = None

    def to_message(self) -> dict[str, Any]:
        """The turn as an OpenAI-style assistant message (for the next request's history)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return message

    def tool_calls_json(self) -> str:
        """The parsed tool calls as JSON text: a list of ``{name, arguments}`` (``[]`` if none)."""
        calls = [{"name": call.name, "arguments": call.arguments} for call in self.tool_calls]
        return json.dumps(calls, ensure_ascii=False, default=str)


class TurnBuilder:
    """Folds a stream of events into a :class:`Turn`; the non-streaming path uses the same."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = []
        self._errors: list[ToolCallError] = []
        self._logprobs: list[TokenLogprob] = []
        self.done: Done | None = None

    def add(self, event: Event) -> None:
        """Fold one event in."""
        if isinstance(event, ContentDelta):
            self._content.append(event.text)
        elif isinstance(event, ThinkingDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCall):
            self._calls.append(event)
        elif isinstance(event, ToolCallError):
            self._errors.append(event)
        elif isinstance(event, TokenLogprob):
            self._logprobs.append(event)
        elif isinstance(event, Done):
            self.done = event

    @property
    def content(self) -> str:
        """Content so far."""
        return "".join(self._content)

    @property
    def reasoning(self) -> str:
        """Reasoning so far."""
        return "".join(self._reasoning)

    def build(self) -> Turn:
        """The finished turn (``finish_reason="error"`` if no :class:`Done` arrived)."""
        done = self.done or Done("error", Usage(), "stream ended without a Done event")
        return Turn(
            content=self.content,
            reasoning=self.reasoning,
            tool_calls=tuple(self._calls),
            tool_call_errors=tuple(self._errors),
            finish_reason=done.finish_reason,
            usage=done.usage,
            error=done.error,
            logprobs=tuple(self._logprobs),
        )


def collect(events: Iterable[Event]) -> Turn:
    """Fold an iterable of events into a :class:`Turn`."""
    builder = TurnBuilder()
    for event in events:
        builder.add(event)
    return builder.build()


async def acollect(events: AsyncIterable[Event]) -> Turn:
    """Fold an async stream of events into a :class:`Turn` (the twin of :func:`collect`)."""
    builder = TurnBuilder()
    async for event in events:
        builder.add(event)
    return builder.build()
