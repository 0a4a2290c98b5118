"""The OpenAI chat wire, client side: engine arguments → request body, SSE chunks → events.

:func:`request_body` turns what :meth:`mlxnb.Engine.stream` takes into a
``/v1/chat/completions`` body, refusing what a remote server cannot do. :class:`ChunkReader`
reads the streamed chunks back into mlxnb's events: ``reasoning_content`` (or ``reasoning``)
deltas become thinking, ``tool_calls`` deltas are gathered by index (argument fragments joined)
and parsed when the answer ends (a call whose arguments are not a JSON object is a
:class:`~mlxnb.events.ToolCallError`), a chunk's ``logprobs.content`` entries become
:class:`~mlxnb.events.TokenLogprob` events (token ids unknown: -1), and time to first token and
tokens/s are measured on the client's clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlxnb._ids import new_tool_call_id
from mlxnb._images import PYTHON_POLICY, load_image
from mlxnb.errors import InvalidRequestError, UnknownOptionError
from mlxnb.events import (
    LOGPROB_FLOOR,
    ContentDelta,
    Done,
    Event,
    FinishReason,
    ThinkingDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolCallError,
    TopLogprob,
    Usage,
)

PASSED = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
"""Sampling options sent as the body fields of the same name."""

SETTINGS = (
    *PASSED,
    "stop",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "top_logprobs",
)
"""The body fields that are the request's settings (an audit row keeps them as ``sampling``)."""

REFUSED = {
    "logits_processors": "logits processors run inside the model's process",
    "prompt": "raw completion prompts are not sent to remote chat endpoints",
    "thinking_budget": "a thinking budget is enforced inside the model's process",
    "prompt_lookup": "prompt-lookup decoding runs inside the model's process",
}
"""Options a remote endpoint refuses, and why (refused before anything is sent)."""

IGNORED = ("prefill_progress",)
"""Options that only change what is displayed while waiting; a remote stream has none."""


def request_body(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    enable_thinking: bool | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The streaming ``/v1/chat/completions`` body for one engine-style call.

    Args:
        model: The remote model's name.
        messages: OpenAI-style messages (sent as they are).
        tools: OpenAI-style tool definitions.
        enable_thinking: Sent as ``chat_template_kwargs.enable_thinking`` when set.
        options: The rest of :meth:`mlxnb.Engine.stream`'s keyword arguments (``meta`` taken
            out by the caller).

    Raises:
        InvalidRequestError: An option only a local engine can honour (logits processors, a
            raw prompt, a thinking budget, …), or messages that are not JSON.
        UnknownOptionError: An option no engine knows.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": outgoing(messages),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    rest = dict(options)
    for name in IGNORED:
        rest.pop(name, None)
    for name, why in REFUSED.items():
        value = rest.pop(name, None)
        if value not in (None, False, 0, (), []):
            raise InvalidRequestError(f"{name}= is not available on a remote endpoint: {why}")
    for name in PASSED:
        value = rest.pop(name, None)
        if value is not None:
            body[name] = value
    top = int(rest.pop("top_logprobs", None) or 0)
    if rest.pop("logprobs", None) or top:
        body["logprobs"], body["top_logprobs"] = True, top
    if (stop := rest.pop("stop", None)) is not None:
        body["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if bias := rest.pop("logit_bias", None):
        pairs = bias.items() if isinstance(bias, Mapping) else bias
        body["logit_bias"] = {str(int(token)): float(value) for token, value in pairs}
    if tools:
        body["tools"] = [dict(tool) for tool in tools]
    template = dict(rest.pop("chat_template_kwargs", None) or {})
    if enable_thinking is not None:
        template["enable_thinking"] = enable_thinking
    if template:
        body["chat_template_kwargs"] = template
    if (choice := rest.pop("tool_choice", None)) is not None:
        body["tool_choice"] = _tool_choice(choice)
    if rest.pop("parallel_tool_calls", True) is False:
        body["parallel_tool_calls"] = False
    schema = rest.pop("json_schema", None)
    response_format = rest.pop("response_format", None)
    if (shaped := _response_format(schema if schema is not None else response_format)) is not None:
        body["response_format"] = shaped
    if rest:
        raise UnknownOptionError(f"unknown option(s) for a remote endpoint: {sorted(rest)}")
    try:
        json.dumps(body)
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(f"the request cannot be sent as JSON: {error}") from error
    return body


def outgoing(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the wire carries them: images as ``data:`` URLs.

    An image part (a PIL image, array, figure, path, bytes, …) becomes an ``image_url`` part
    with a ``data:`` URL of the checked image.

    Raises:
        InvalidRequestError: An image that cannot be loaded.
    """
    sent = []
    for message in messages:
        message = dict(message)
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = [_part(part) for part in content]
        sent.append(message)
    return sent


def _part(part: Any) -> Any:
    if isinstance(part, Mapping) and part.get("type") == "image":
        image = load_image(part.get("image"), policy=PYTHON_POLICY)
        return {"type": "image_url", "image_url": {"url": image.data_url()}}
    return dict(part) if isinstance(part, Mapping) else part


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, Mapping) and "name" in choice and "function" not in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return dict(choice)


def _response_format(shape: Any) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` for a JSON schema, a pydantic model class or the field."""
    if shape is None:
        return None
    if isinstance(shape, type) and hasattr(shape, "model_json_schema"):
        schema = shape.model_json_schema()
        return {"type": "json_schema", "json_schema": {"name": shape.__name__, "schema": schema}}
    if isinstance(shape, Mapping) and shape.get("type") in ("json_schema", "json_object", "text"):
        return dict(shape)
    if isinstance(shape, Mapping):
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": dict(shape)}}
    raise InvalidRequestError(f"response_format must be a schema or a pydantic model: {shape!r}")


def parsed_answer(shape: Any, content: str) -> Any:
    """The answer parsed as the response format asked (``None`` if it does not parse)."""
    if shape is None:
        return None
    try:
        if isinstance(shape, type) and hasattr(shape, "model_validate_json"):
            return shape.model_validate_json(content)
        return json.loads(content)
    except ValueError:
        return None


@dataclass
class _Call:
    id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChunkReader:
    """Reads one stream's chunks into events and measures it.

    Attributes:
        started: ``time.perf_counter()`` when the request was sent.
        first_token: When the first piece of the answer (thinking, content or a call) came.
        finish_reason: The server's finish reason, once sent.
        usage: The server's ``usage`` object, once sent.
    """

    started: float
    first_token: float | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    _calls: dict[int, _Call] = field(default_factory=dict)

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        """The events of one parsed SSE chunk (``data: {...}``)."""
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            thinking = delta.get("reasoning_content") or delta.get("reasoning")
            # A token's log-probability comes before its text, as a local engine sends it.
            logprobs = choice.get("logprobs") or {}
            for entry in logprobs.get("content") or ():
                events.append(_token_logprob(entry, reasoning=bool(thinking)))
            if thinking:
                events.append(ThinkingDelta(str(thinking)))
            if delta.get("content"):
                events.append(ContentDelta(str(delta["content"])))
            for entry in delta.get("tool_calls") or ():
                events.extend(self._call_piece(entry))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if events and self.first_token is None:
            self.first_token = time.perf_counter()
        return events

    def _call_piece(self, entry: Mapping[str, Any]) -> list[Event]:
        index = int(entry.get("index", len(self._calls)))
        call = self._calls.setdefault(index, _Call(str(entry.get("id") or new_tool_call_id())))
        function = entry.get("function") or {}
        if function.get("name"):
            call.name += str(function["name"])
        piece = function.get("arguments")
        if not piece:
            return []
        call.arguments.append(str(piece))
        return [ToolCallDelta(index, str(piece))]

    def finish(self, error: str | None = None) -> list[Event]:
        """The parsed tool calls, then ``Done`` with usage measured on this side."""
        events: list[Event] = []
        for index in sorted(self._calls):
            events.append(_parsed(index, self._calls[index]))
        events.append(Done(self._reason(error), self.measured(), error))
        return events

    def _reason(self, error: str | None) -> FinishReason:
        if error is not None:
            return "error"
        reason = self.finish_reason
        if reason in ("stop", "length", "tool_calls", "cancelled", "error"):
            return reason  # type: ignore[return-value]
        return "tool_calls" if self._calls else "stop"

    def measured(self, ended: float | None = None) -> Usage:
        """Token counts as the server sent them; timings measured on the client's clock."""
        ended = time.perf_counter() if ended is None else ended
        usage = self.usage or {}
        completion = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        reasoning = usage.get("completion_tokens_details") or {}
        first = self.first_token
        return Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=completion,
            cached_tokens=int(details.get("cached_tokens") or 0),
            time_to_first_token=None if first is None else first - self.started,
            generation_tps=(
                (completion - 1) / (ended - first)
                if first is not None and completion > 1 and ended > first
                else None
            ),
            reasoning_tokens=int(reasoning.get("reasoning_tokens") or 0),
        )


def _token_logprob(entry: Mapping[str, Any], *, reasoning: bool) -> TokenLogprob:
    """One entry of a chunk's ``logprobs.content`` (the wire carries no token ids: -1)."""
    alternatives = tuple(
        TopLogprob(str(top.get("token", "")), -1, float(top.get("logprob", LOGPROB_FLOOR)))
        for top in entry.get("top_logprobs") or ()
    )
    logprob = float(entry.get("logprob", LOGPROB_FLOOR))
    return TokenLogprob(str(entry.get("token", "")), -1, logprob, alternatives, reasoning)


def _parsed(index: int, call: _Call) -> ToolCall | ToolCallError:
    raw = "".join(call.arguments)
    if not call.name:
        return ToolCallError(index, raw, "the server sent a tool call without a name")
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as error:
        return ToolCallError(index, raw, f"arguments are not JSON: {error}")
    if not isinstance(arguments, dict):
        return ToolCallError(index, raw, "arguments are not a JSON object")
    return ToolCall(index, call.id, call.name, arguments)


def error_message(body: Any) -> str:
    """The message of an OpenAI-shaped error body (or the body itself, shortened)."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return str(body)[:500]
