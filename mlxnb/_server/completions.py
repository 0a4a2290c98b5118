"""``/v1/completions``: raw prompts in, ``text_completion`` bodies out (streamed or whole).

A request's prompts (strings or token ids) times ``n`` become one engine request per choice;
:class:`TextChunks` turns each choice's events into OpenAI's text-completion shapes, legacy
``logprobs`` object included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from mlxnb._server.openai import (
    EngineCall,
    Prompt,
    finish_reason,
    sampling_fields,
    total_usage,
    usage_body,
    usage_chunk,
)
from mlxnb._server.schemas import CompletionRequest
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    ThinkingDelta,
    TokenLogprob,
    ToolCallDelta,
    collect,
    json_logprob,
)
from mlxnb.events import Usage as EngineUsage


def completion_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    """The prompts of a validated ``prompt`` field: one per string or token-id list."""
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, int) for p in prompt):
        return [tuple(cast("list[int]", prompt))]
    return [p if isinstance(p, str) else tuple(cast("list[int]", p)) for p in prompt]


def completion_call(request: CompletionRequest) -> EngineCall:
    """Translate a text-completion request into engine arguments (``n`` choices per prompt)."""
    options = sampling_fields(request, request.max_tokens or 16)
    if request.logprobs is not None:  # an int from 0 to 5, checked by the route
        options.update(logprobs=True, top_logprobs=int(request.logprobs))
    prompts = tuple(completion_prompts(request.prompt))
    return EngineCall([], None, None, options, prompts=prompts, n=request.n)


def text_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """``/v1/completions``' ``logprobs`` object, the first token at text offset ``offset``."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [entry.token for entry in entries],
        "token_logprobs": [json_logprob(entry.logprob) for entry in entries],
        "top_logprobs": [
            {t.token: json_logprob(t.logprob) for t in entry.top_logprobs} for entry in entries
        ],
        "text_offset": offsets,
    }


def completion_chunk(
    text: str, *, id: str, model: str, created: int, finish: str | None = None, index: int = 0
) -> dict[str, Any]:
    """A ``text_completion`` body with one choice (a streamed piece, or a whole answer)."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def event_text(event: Event) -> str:
    """The text a raw completion shows for an event (reasoning and raw call text included)."""
    if isinstance(event, ThinkingDelta | ContentDelta | ToolCallDelta):
        return event.text
    return ""


@dataclass
class TextChunks:
    """Translates the engine events of every choice into ``text_completion`` bodies.

    Choice ``i * n + j`` is sample ``j`` of prompt ``i``.

    Args:
        id: The completion id.
        model: The model name to report.
        include_usage: Add a final usage-only chunk (summing every choice) when streaming.
        created: Unix time of the request.
        n: Choices per prompt.
        echo: With ``echo``, the text of prompt ``i`` (each of its choices starts with it);
            called only once the engine answered, so it may use the tokenizer.
    """

    id: str
    model: str
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    n: int = 1
    echo: Callable[[int], str] | None = None
    _usage: dict[int, EngineUsage] = field(default_factory=dict, init=False, repr=False)
    _logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict, init=False, repr=False)
    _offsets: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def body(self, text: str, finish: str | None = None, index: int = 0) -> dict[str, Any]:
        """One ``text_completion`` body for choice ``index``.

        Log-probabilities of that choice's tokens since its last body ride on it.
        """
        body = completion_chunk(
            text, id=self.id, model=self.model, created=self.created, finish=finish, index=index
        )
        if pending := self._logprobs.pop(index, None):
            offset = self._offsets.get(index, len(self._echoed(index)))
            body["choices"][0]["logprobs"] = text_logprobs(pending, offset)
            self._offsets[index] = offset + sum(len(entry.token) for entry in pending)
        if self.include_usage:
            body["usage"] = None
        return body

    def _echoed(self, index: int) -> str:
        return self.echo(index // self.n) if self.echo is not None else ""

    def start(self, choices: int) -> list[dict[str, Any]]:
        """The bodies opening a stream of ``choices`` choices: each one's echoed prompt."""
        if self.echo is None:
            return []
        return [self.body(self._echoed(index), index=index) for index in range(choices)]

    def event(self, index: int, event: Event) -> list[dict[str, Any]]:
        """The streamed bodies for one event of choice ``index`` (its finish on ``Done``)."""
        if isinstance(event, TokenLogprob):
            self._logprobs.setdefault(index, []).append(event)
            return []
        if isinstance(event, Done):
            self._usage[index] = event.usage
            return [self.body("", finish_reason(event.finish_reason), index)]
        text = event_text(event)
        return [self.body(text, index=index)] if text else []

    def end(self) -> list[dict[str, Any]]:
        """The bodies closing a stream once every choice is done: the usage chunk if asked."""
        if not self.include_usage:
            return []
        usages = [self._usage[index] for index in sorted(self._usage)]
        usage = total_usage(usages, self.n)
        return [
            usage_chunk(
                id=self.id,
                object="text_completion",
                created=self.created,
                model=self.model,
                usage=usage,
            )
        ]

    def whole(self, choices: Sequence[list[Event]]) -> dict[str, Any]:
        """The non-streamed body of every choice's finished events (in choice order)."""
        turns = [collect(events) for events in choices]
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": index,
                    "text": self._echoed(index) + "".join(map(event_text, events)),
                    "logprobs": (
                        text_logprobs(turn.logprobs, len(self._echoed(index)))
                        if turn.logprobs
                        else None
                    ),
                    "finish_reason": finish_reason(turn.finish_reason),
                }
                for index, (events, turn) in enumerate(zip(choices, turns, strict=True))
            ],
            "usage": usage_body(total_usage([turn.usage for turn in turns], self.n)),
        }
