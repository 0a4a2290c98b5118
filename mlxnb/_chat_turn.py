"""A chat turn: the finished value, and how it is assembled while its rounds stream.

:mod:`mlxnb._chat` drives the rounds; this module only keeps time and folds them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from mlxnb._chat_tools import ToolApproval
from mlxnb._tools import ToolResult
from mlxnb.events import (
    ContentDelta,
    Event,
    FinishReason,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Turn,
    TurnBuilder,
    Usage,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RoundStart:
    """A new request to the engine begins (0 for the first; tool results come before 1, 2…)."""

    round: int
    type: Literal["round"] = field(default="round", init=False)


@dataclass(frozen=True)
class ContextTrimmed:
    """Older messages were left out of the request so that it fits the model's context.

    Only a :class:`~mlxnb.Conversation` made with ``truncate=True`` does this; it comes before
    the round's first event. The history keeps every message; only the request is shorter.

    Attributes:
        left_out: How many earlier messages (after the system prompt) the request leaves out.
    """

    left_out: int
    type: Literal["context_trimmed"] = field(default="context_trimmed", init=False)


@dataclass(frozen=True)
class ChatTurn:
    """A finished chat turn: the user's message and everything the model did about it.

    Attributes:
        user: The user's message.
        content: The final answer (the last round's content).
        reasoning: Reasoning text of all rounds.
        rounds: Each request's :class:`~mlxnb.events.Turn`, in order.
        tool_results: Results of the tools that ran, in order.
        finish_reason: Why the turn ended (``cancelled`` after Stop, ``error`` on failure).
        usage: Token counts summed over rounds; time to first token of the first round.
        seconds: Wall time of the whole turn.
        thinking_seconds: Time spent reasoning (``None`` when the model did not think).
        error: What went wrong, for ``finish_reason == "error"`` or a hit round limit.
        left_out: Earlier messages left out of the last request to fit the context
            (``truncate=True`` only).
        parsed: The answer parsed, when the conversation asks for a ``response_format``.
    """

    user: str
    content: str
    reasoning: str
    rounds: tuple[Turn, ...]
    tool_results: tuple[ToolResult, ...]
    finish_reason: FinishReason
    usage: Usage
    seconds: float
    thinking_seconds: float | None = None
    error: str | None = None
    left_out: int = 0
    parsed: Any = None
    type: Literal["chat_turn"] = field(default="chat_turn", init=False)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls of every round, in order."""
        return tuple(call for turn in self.rounds for call in turn.tool_calls)

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds until the first token of the first round."""
        return self.usage.time_to_first_token

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed over all rounds."""
        return self.usage.generation_tps

    def stats(self) -> dict[str, Any]:
        """The per-answer statistics the widget shows."""
        return {
            "ttft": _rounded(self.usage.time_to_first_token, 3),
            "tps": _rounded(self.usage.generation_tps, 1),
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "seconds": round(self.seconds, 3),
            "rounds": len(self.rounds),
            "finish_reason": self.finish_reason,
            "context_tokens": self.context_tokens,
        }

    @property
    def context_tokens(self) -> int:
        """Tokens of the conversation as the model last saw it.

        Its last round's prompt and answer: what the next message starts from, unless older
        turns are left out.
        """
        if not self.rounds:
            return 0
        usage = self.rounds[-1].usage
        return usage.prompt_tokens + usage.completion_tokens


ChatEvent = Event | RoundStart | ContextTrimmed | ToolApproval | ToolResult | ChatTurn
"""What :meth:`Conversation.stream` yields; the last item is always the :class:`ChatTurn`."""


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def sum_usage(rounds: Sequence[Turn]) -> Usage:
    """Token counts of several rounds added up; speed weighted by tokens."""
    if not rounds:
        return Usage()
    completion = sum(t.usage.completion_tokens for t in rounds)
    timed = [t.usage for t in rounds if t.usage.generation_tps and t.usage.completion_tokens]
    busy = sum(u.completion_tokens / u.generation_tps for u in timed if u.generation_tps)
    peaks = [t.usage.peak_memory_gb for t in rounds if t.usage.peak_memory_gb is not None]
    return Usage(
        prompt_tokens=sum(t.usage.prompt_tokens for t in rounds),
        completion_tokens=completion,
        cached_tokens=sum(t.usage.cached_tokens for t in rounds),
        time_to_first_token=rounds[0].usage.time_to_first_token,
        prompt_tps=rounds[0].usage.prompt_tps,
        generation_tps=sum(u.completion_tokens for u in timed) / busy if busy else None,
        peak_memory_gb=max(peaks) if peaks else None,
    )


def join_rounds(first: Turn, then: Turn) -> Turn:
    """A round cut by ``max_tokens`` and its continuation, as one round (one message)."""
    return replace(
        then,
        content=first.content + then.content,
        reasoning=first.reasoning + then.reasoning,
        tool_calls=first.tool_calls + then.tool_calls,
        tool_call_errors=first.tool_call_errors + then.tool_call_errors,
        usage=sum_usage([first, then]),
        logprobs=first.logprobs + then.logprobs,
    )


_COLUMNS = (
    "user", "content", "reasoning", "tool_calls", "finish_reason", "error",
    "time_to_first_token", "tokens_per_second", "prompt_tokens", "completion_tokens",
    "seconds", "thinking_seconds", "rounds",
)  # fmt: skip


def turns_frame(turns: Sequence[ChatTurn]) -> pd.DataFrame:
    """One row per chat turn: messages, tool calls, finish reason and statistics."""
    import pandas as pd

    rows = [
        (
            t.user,
            t.content,
            t.reasoning,
            [call.name for call in t.tool_calls],
            t.finish_reason,
            t.error,
            t.time_to_first_token,
            t.tokens_per_second,
            t.usage.prompt_tokens,
            t.usage.completion_tokens,
            t.seconds,
            t.thinking_seconds,
            len(t.rounds),
        )
        for t in turns
    ]
    frame: pd.DataFrame = pd.DataFrame(rows, columns=list(_COLUMNS))
    return frame


class TurnProgress:
    """Timings and results of the chat turn in flight."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.start = self.round_start = time.perf_counter()
        self.first_event: float | None = None
        self.last_event = self.start
        self.rounds: list[Turn] = []
        self.results: list[ToolResult] = []
        self.thinking = 0.0
        self.thought = False
        self._think_start: float | None = None
        self.deltas = 0
        self.left_out = 0

    def resume(self, turn: ChatTurn) -> Turn:
        """Go on with a finished turn: its rounds, results and time; returns its last round."""
        self.rounds = list(turn.rounds[:-1])
        self.results = list(turn.tool_results)
        self.start -= turn.seconds
        self.left_out = turn.left_out
        if turn.thinking_seconds is not None:
            self.thought, self.thinking = True, turn.thinking_seconds
        return turn.rounds[-1]

    def new_round(self) -> None:
        self.round_start = time.perf_counter()
        self.first_event = None
        self.deltas = 0

    def observe(self, event: Event) -> None:
        now = self.last_event = time.perf_counter()
        if self.first_event is None:
            self.first_event = now
        if isinstance(event, ThinkingDelta):
            self.thought = True
            if self._think_start is None:
                self._think_start = now
        elif self._think_start is not None:
            self.thinking += now - self._think_start
            self._think_start = None
        if isinstance(event, ThinkingDelta | ContentDelta | ToolCallDelta):
            self.deltas += 1

    def stopped_round(self, builder: TurnBuilder, reason: FinishReason, error: str | None) -> Turn:
        """The round cut short by Stop or a failure, with what is known of its usage."""
        if builder.done is not None:
            usage = builder.done.usage
        else:  # no Done: count the deltas seen (about one per token)
            ttft = tps = None
            if self.first_event is not None:
                ttft = self.first_event - self.round_start
                span = self.last_event - self.first_event
                tps = (self.deltas - 1) / span if self.deltas > 1 and span > 0 else None
            usage = Usage(
                completion_tokens=self.deltas, time_to_first_token=ttft, generation_tps=tps
            )
        return replace(builder.build(), finish_reason=reason, usage=usage, error=error)

    def finish(self, reason: FinishReason, error: str | None) -> ChatTurn:
        if self._think_start is not None:
            self.thinking += time.perf_counter() - self._think_start
            self._think_start = None
        last = self.rounds[-1] if self.rounds else None
        return ChatTurn(
            user=self.user,
            content=last.content if last else "",
            reasoning="".join(t.reasoning for t in self.rounds),
            rounds=tuple(self.rounds),
            tool_results=tuple(self.results),
            finish_reason=reason,
            usage=sum_usage(self.rounds),
            seconds=time.perf_counter() - self.start,
            thinking_seconds=self.thinking if self.thought else None,
            error=error,
            left_out=self.left_out,
        )
