"""Anthropic's Messages API wire format: validated requests → engine arguments, events → bodies.

Pure translation with no I/O and no MLX, as :mod:`mlxnb._server.openai` is for OpenAI: a
``/v1/messages`` body becomes the OpenAI-style messages and tools the engine takes, and the
engine's events become a ``message`` body or the ``message_start`` … ``message_stop`` server-sent
events. Errors on this route are Anthropic-shaped (:class:`MessagesError`). The route itself is
in :mod:`mlxnb._server.messages`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse

from mlxnb._server.anthropic_schemas import (
    ImageBlock,
    MessageParam,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingAdaptive,
    ThinkingBlock,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from mlxnb._server.errors import ApiError, validation_error
from mlxnb._server.openai import EngineCall
from mlxnb._server.unserved import MESSAGES_UNSERVED, first_unserved
from mlxnb.events import ContentDelta, Done, Event, ThinkingDelta, ToolCall, ToolCallError, Usage

MESSAGES_PATH = "/v1/messages"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def error_body(type_: str, message: str) -> dict[str, Any]:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": type_, "message": message}}


class MessagesError(ApiError):
    """An API error answered in Anthropic's shape; ``type`` is Anthropic's error type."""

    def response(self) -> JSONResponse:
        """The Anthropic-shaped JSON response."""
        headers = {"Retry-After": "1"} if self.status == 429 else None
        return JSONResponse(
            error_body(self.type, self.message), status_code=self.status, headers=headers
        )


def messages_error(error: ApiError) -> MessagesError:
    """The same error in Anthropic's shape (a schema error is a 400, as Anthropic answers)."""
    if isinstance(error, MessagesError):
        return error
    status = 400 if error.status == 422 else error.status
    type_ = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return MessagesError(status, error.message, type_, error.code, error.param)


def for_path(path: str, error: ApiError) -> ApiError:
    """``error`` in the shape the route at ``path`` answers in (Anthropic's under /v1/messages)."""
    anthropic = path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/")
    return messages_error(error) if anthropic else error


def invalid(field: str, message: str) -> MessagesError:
    """A 400 ``invalid_request_error`` naming ``field``."""
    return MessagesError(400, f"{field}: {message}", "invalid_request_error", None, field)


def messages_validation_error(errors: Any) -> MessagesError:
    """Pydantic's validation errors as one Anthropic-shaped 400."""
    return messages_error(validation_error(errors))


# -- requests --------------------------------------------------------------------------------


def _text(blocks: str | Sequence[TextBlock]) -> str:
    # Joined as the engine's normaliser joins OpenAI text parts, so both APIs render alike.
    return blocks if isinstance(blocks, str) else "".join(block.text for block in blocks)


def _image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if source.type == "base64":
        url = f"data:{source.media_type};base64,{source.data}"
    else:
        url = source.url  # the engine's image policy decides whether it may be fetched
    return {"type": "image_url", "image_url": {"url": url}}


def _user(message: MessageParam, where: str) -> list[dict[str, Any]]:
    """A user message: tool results become ``tool`` messages, the rest user messages, in order."""
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []

    def flush() -> None:
        if parts and all(part["type"] == "text" for part in parts):
            out.append({"role": "user", "content": "".join(part["text"] for part in parts)})
        elif parts:
            out.append({"role": "user", "content": list(parts)})
        parts.clear()

    for position, block in enumerate(message.content):
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block))
        elif isinstance(block, ToolResultBlock):
            flush()
            content = _text(block.content)
            if block.is_error:
                # Templates have no place for the flag; the model still has to learn of it.
                content = f"Error: {content}"
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": content})
        else:
            raise invalid(
                f"{where}.content.{position}", f"a user message cannot hold a {block.type} block"
            )
    flush()
    return out


def _assistant(message: MessageParam, where: str) -> dict[str, Any]:
    """An assistant message: text, reasoning and tool calls in OpenAI's shape."""
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for position, block in enumerate(message.content):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": arguments},
                }
            )
        elif not isinstance(block, RedactedThinkingBlock):  # opaque: nothing a model here reads
            raise invalid(
                f"{where}.content.{position}",
                f"an assistant message cannot hold a {block.type} block",
            )
    out: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if reasoning:
        out["reasoning"] = "".join(reasoning)
    if calls:
        out["tool_calls"] = calls
    return out


def messages_call(request: MessagesRequest) -> EngineCall:
    """Translate a ``/v1/messages`` body into engine arguments.

    A final assistant message is a prefill: the answer carries it on (the chat template's
    ``continue_final_message``), and the reply holds only what comes after it, as Anthropic's.

    Raises:
        MessagesError: A block in the wrong role, a prefill that cannot be carried on, or
            another API's field that would change the answer (:mod:`mlxnb._server.unserved`).
    """
    found = first_unserved(request.model_extra, MESSAGES_UNSERVED)
    if found is not None:
        raise invalid(*found)
    choice = request.tool_choice
    prefilled = request.messages[-1].role == "assistant"
    if prefilled:
        _check_prefill(request)
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": _text(request.system)})
    for position, message in enumerate(request.messages):
        where = f"messages.{position}"
        if message.role == "user":
            messages.extend(_user(message, where))
        else:
            messages.append(_assistant(message, where))
    tools = [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                **({"description": tool.description} if tool.description is not None else {}),
                "parameters": tool.input_schema,
            },
        }
        for tool in request.tools or []
    ] or None
    if isinstance(choice, ToolChoiceNone):
        tools = None
    thinking = request.thinking
    enable_thinking = (
        None
        if thinking is None or isinstance(thinking, ThinkingAdaptive)
        else isinstance(thinking, ThinkingEnabled)
    )
    options: dict[str, Any] = {"max_tokens": request.max_tokens}
    if isinstance(thinking, ThinkingEnabled):
        options["thinking_budget"] = thinking.budget_tokens
    # The engine forces the call (its grammar follows the model's own tool-call format).
    if isinstance(choice, ToolChoiceAny):
        options["tool_choice"] = "required"
    elif isinstance(choice, ToolChoiceTool):
        options["tool_choice"] = {"name": choice.name}
    if not isinstance(choice, ToolChoiceNone | None) and choice.disable_parallel_tool_use:
        options["parallel_tool_calls"] = False
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(request, name)) is not None:
            options[name] = value
    if request.stop_sequences:
        options["stop"] = list(request.stop_sequences)
    output = request.output_config
    schema = output.format.schema_ if output is not None and output.format is not None else None
    if prefilled:
        options["chat_template_kwargs"] = {"continue_final_message": True}
    return EngineCall(messages, tools, enable_thinking, options, schema)


def _check_prefill(request: MessagesRequest) -> None:
    """Refuse a final assistant message the engine cannot carry on as it stands.

    Raises:
        MessagesError: It holds more than text, ends with whitespace (which a chat template
            would drop unseen), or comes with thinking, a forced tool call or an output format
            (each of which would constrain the answer from its start, not from the prefill's
            end).
    """
    where = f"messages.{len(request.messages) - 1}"
    content = request.messages[-1].content
    if not isinstance(content, str):
        for position, block in enumerate(content):
            if not isinstance(block, TextBlock):
                raise invalid(
                    f"{where}.content.{position}",
                    f"a final assistant message (prefill) can hold text only, not {block.type}",
                )
        content = "".join(block.text for block in content if isinstance(block, TextBlock))
    if content != content.rstrip():
        raise invalid(f"{where}.content", "a final assistant message cannot end with whitespace")
    if isinstance(request.thinking, ThinkingEnabled):
        raise invalid("thinking", "thinking cannot be used with a final assistant message")
    if isinstance(request.tool_choice, ToolChoiceAny | ToolChoiceTool):
        raise invalid("tool_choice", "a forced tool call cannot follow a final assistant message")
    if request.output_config is not None and request.output_config.format is not None:
        raise invalid(
            "output_config.format", "an output format cannot follow a final assistant message"
        )


# -- responses -------------------------------------------------------------------------------


def usage_body(usage: Usage) -> dict[str, Any]:
    """Token counts in Anthropic's shape: ``input_tokens`` excludes the cache-read ones."""
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def stop_sequence(done: Done) -> str | None:
    """The stop sequence that ended the turn, if one did."""
    return done.stop_sequence


def stop_reason(done: Done) -> str:
    """Anthropic's ``stop_reason`` for the engine's finish reason."""
    if done.finish_reason == "length":
        return "max_tokens"
    if done.finish_reason == "tool_calls":
        return "tool_use"
    return "stop_sequence" if stop_sequence(done) is not None else "end_turn"


def sse(body: Mapping[str, Any]) -> bytes:
    """One named server-sent event: ``event: <type>`` and its JSON ``data``."""
    return f"event: {body['type']}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


@dataclass
class MessageEvents:
    """Translates one stream of engine events into the Messages API's stream events.

    Thinking and text become blocks that open when their kind starts and close when another
    begins; a parsed tool call is a whole ``tool_use`` block; an unparseable call stays visible
    as text (as on the OpenAI routes). The non-streamed body is folded from the same events
    (:func:`message_body`), so both agree.

    Args:
        id: The message id.
        model: The model name to report.
    """

    id: str
    model: str
    failure: str | None = None
    _open: str | None = field(default=None, init=False)
    _index: int = field(default=-1, init=False)

    def start(self) -> list[dict[str, Any]]:
        """The ``message_start`` event (the engine counts tokens only when it is done)."""
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def event(self, event: Event) -> list[dict[str, Any]]:
        """The stream events for one engine event (raw tool-call text has none)."""
        if isinstance(event, ThinkingDelta):
            return [*self._block("thinking"), self._delta("thinking_delta", thinking=event.text)]
        if isinstance(event, ContentDelta | ToolCallError):
            text = event.text if isinstance(event, ContentDelta) else event.raw
            return [*self._block("text"), self._delta("text_delta", text=text)]
        if isinstance(event, ToolCall):
            block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
            arguments = json.dumps(event.arguments, ensure_ascii=False)
            return [
                *self._close(),
                *self._start(block),
                self._delta("input_json_delta", partial_json=arguments),
                *self._close(),
            ]
        if isinstance(event, Done):
            delta = {"stop_reason": stop_reason(event), "stop_sequence": stop_sequence(event)}
            return [
                *self._close(),
                {"type": "message_delta", "delta": delta, "usage": usage_body(event.usage)},
                {"type": "message_stop"},
            ]
        return []

    def fail(self, message: str) -> None:
        """Note that generation failed after the stream began; :meth:`end` reports it."""
        self.failure = message

    def end(self) -> list[dict[str, Any]]:
        """After the last event: an ``error`` event if generation failed midway."""
        return [] if self.failure is None else [error_body("api_error", self.failure)]

    def _start(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._index += 1
        self._open = block["type"]
        return [{"type": "content_block_start", "index": self._index, "content_block": block}]

    def _block(self, kind: str) -> list[dict[str, Any]]:
        if self._open == kind:
            return []
        if kind == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            empty = {"type": "text", "text": ""}
        return [*self._close(), *self._start(empty)]

    def _delta(self, type_: str, **delta: Any) -> dict[str, Any]:
        return {
            "type": "content_block_delta",
            "index": self._index,
            "delta": {"type": type_, **delta},
        }

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        events = [self._delta("signature_delta", signature="")] if self._open == "thinking" else []
        self._open = None
        return [*events, {"type": "content_block_stop", "index": self._index}]


def message_body(events: Sequence[Event], *, id: str, model: str) -> dict[str, Any]:
    """A finished stream of engine events as one ``message`` body (the same blocks as streamed)."""
    translator = MessageEvents(id, model)
    body: dict[str, Any] = translator.start()[0]["message"]
    for event in events:
        for item in translator.event(event):
            if item["type"] == "content_block_start":
                body["content"].append(dict(item["content_block"]))
            elif item["type"] == "content_block_delta":
                block, delta = body["content"][item["index"]], item["delta"]
                if delta["type"] == "text_delta":
                    block["text"] += delta["text"]
                elif delta["type"] == "thinking_delta":
                    block["thinking"] += delta["thinking"]
                elif delta["type"] == "input_json_delta":
                    block["input"] = json.loads(delta["partial_json"])
            elif item["type"] == "message_delta":
                body.update(item["delta"])
                body["usage"] = item["usage"]
    return body
