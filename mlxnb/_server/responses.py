"""OpenAI's Responses API wire format: validated requests → engine arguments, events → responses.

Pure translation with no I/O and no MLX, as :mod:`mlxnb._server.openai` is for chat completions:
a ``/v1/responses`` body (and the stored conversation it continues) becomes the OpenAI-style
messages and tools the engine takes, and the engine's events become a ``response`` object or the
``response.created`` … ``response.completed`` server-sent events. The route and the store of
finished responses are in :mod:`mlxnb._server.responses_route`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlxnb._server.errors import ApiError
from mlxnb._server.openai import EngineCall, effort_options
from mlxnb._server.responses_schemas import (
    LOGPROBS_INCLUDE,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputImagePart,
    InputItem,
    MessageItem,
    OtherItem,
    OtherPart,
    OtherTool,
    ReasoningItem,
    RefusalPart,
    ResponsesRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    ThinkingDelta,
    TokenLogprob,
    ToolCall,
    ToolCallError,
    Usage,
)

RESPONSES_PATH = "/v1/responses"


def unsupported(field: str, message: str) -> ApiError:
    """A 400 ``invalid_request_error`` naming ``field``."""
    return ApiError(400, f"{field}: {message}", "invalid_request_error", "unsupported_value", field)


# -- requests --------------------------------------------------------------------------------


def input_items(request: ResponsesRequest) -> list[InputItem]:
    """The request's ``input`` as items (a string is one user message)."""
    if isinstance(request.input, str):
        return [MessageItem(role="user", content=request.input)]
    return list(request.input or [])


def _parts(content: Any, where: str, *, images: bool) -> str | list[dict[str, Any]]:
    """Content as the engine takes it: text only is joined into one string, as other routes do."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for position, part in enumerate(content):
        if isinstance(part, InputImagePart):
            if not images:
                raise unsupported(f"{where}.{position}", "images are allowed in user messages only")
            if part.image_url is None:
                raise unsupported(
                    f"{where}.{position}", "file_id images are not supported; send image_url"
                )
            parts.append({"type": "image_url", "image_url": {"url": part.image_url}})
        elif isinstance(part, OtherPart):
            raise unsupported(f"{where}.{position}", f"{part.type!r} parts are not supported")
        else:
            text = part.refusal if isinstance(part, RefusalPart) else part.text
            parts.append({"type": "text", "text": text})
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _text(content: Any, where: str) -> str:
    return str(_parts(content, where, images=False))  # text only: always a string


def to_messages(items: Sequence[InputItem], *, first: int = 0) -> list[dict[str, Any]]:
    """Items as OpenAI-style chat messages, as the engine's normaliser takes them.

    Consecutive assistant items (reasoning, messages, function calls) become one assistant
    message with ``content``, ``reasoning`` and ``tool_calls``; a function call's output becomes
    a ``tool`` message.

    Args:
        items: The conversation's items, oldest first.
        first: The position in ``input`` of ``items[0]`` (items before it came from a stored
            response), so an error names the request's own field.

    Raises:
        ApiError: An item or part that cannot be served, or function-call arguments that are
            not JSON, naming where it is.
    """
    messages: list[dict[str, Any]] = []
    turn: dict[str, Any] | None = None  # the assistant message being gathered

    def assistant() -> dict[str, Any]:
        nonlocal turn
        if turn is None:
            turn = {"role": "assistant", "content": ""}
            messages.append(turn)
        return turn

    for position, item in enumerate(items):
        where = f"input.{position - first}"
        if isinstance(item, MessageItem) and item.role != "assistant":
            turn = None
            content = _parts(item.content, f"{where}.content", images=item.role == "user")
            messages.append({"role": item.role, "content": content})
        elif isinstance(item, MessageItem):
            assistant()["content"] += _text(item.content, f"{where}.content")
        elif isinstance(item, ReasoningItem):
            texts = [part.text for part in item.content or []] or [s.text for s in item.summary]
            reply = assistant()
            reply["reasoning"] = reply.get("reasoning", "") + "\n".join(texts)
        elif isinstance(item, FunctionCallItem):
            try:
                json.loads(item.arguments or "{}")
            except json.JSONDecodeError as error:
                raise unsupported(f"{where}.arguments", f"not valid JSON ({error})") from None
            call = {"name": item.name, "arguments": item.arguments or "{}"}
            reply = assistant()
            reply.setdefault("tool_calls", []).append(
                {"id": item.call_id, "type": "function", "function": call}
            )
        elif isinstance(item, FunctionCallOutputItem):
            turn = None
            output = _text(item.output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        else:
            assert isinstance(item, OtherItem)
            raise unsupported(f"{where}.type", f"{item.type!r} items are not supported")
    return messages


def responses_call(request: ResponsesRequest, history: Sequence[InputItem] = ()) -> EngineCall:
    """Translate a ``/v1/responses`` body into engine arguments.

    Args:
        request: The validated body (the route has refused what it cannot serve).
        history: The items of the response it continues (``previous_response_id``): the stored
            response's input and output, oldest first. Its instructions do not carry over.

    Raises:
        ApiError: A built-in tool, an item or part that cannot be served, or no input at all.
    """
    tools: list[dict[str, Any]] = []
    for position, tool in enumerate(request.tools or []):
        if isinstance(tool, OtherTool):
            raise unsupported(
                f"tools.{position}.type",
                f"{tool.type!r} tools are not supported; only 'function' tools are",
            )
        assert isinstance(tool, FunctionTool)
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
        tools.append({"type": "function", "function": function})
    items = input_items(request)
    if not history and not items:
        raise unsupported("input", "give at least one input item (or a previous_response_id)")
    messages = to_messages([*history, *items], first=len(history))
    if request.instructions is not None:
        messages.insert(0, {"role": "system", "content": request.instructions})
    effort = request.reasoning.effort if request.reasoning is not None else None
    thinking, budget = effort_options(effort)
    options: dict[str, Any] = {"max_tokens": request.max_output_tokens, **budget}
    for name in ("temperature", "top_p"):
        if (value := getattr(request, name)) is not None:
            options[name] = value
    if wants_logprobs(request):
        options.update(logprobs=True, top_logprobs=request.top_logprobs or 0)
    format_ = request.text.format if request.text is not None else None
    schema: dict[str, Any] | None = None
    if isinstance(format_, TextFormatJsonObject):
        schema = {"type": "object"}
    elif isinstance(format_, TextFormatJsonSchema):
        schema = format_.schema_
    choice = request.tool_choice
    if isinstance(choice, dict):
        options["tool_choice"] = {"name": choice["name"]}  # checked by the route
    elif choice == "required":
        options["tool_choice"] = choice
    if request.parallel_tool_calls is False:
        options["parallel_tool_calls"] = False
    usable = tools if tools and choice != "none" else None
    return EngineCall(messages, usable, thinking, options, schema)


def wants_logprobs(request: ResponsesRequest) -> bool:
    """Whether the answer's text comes with log-probabilities.

    OpenAI returns them for ``include: ["message.output_text.logprobs"]``; a ``top_logprobs``
    above 0 asks for them too here, rather than being silently dropped without it.
    """
    return LOGPROBS_INCLUDE in (request.include or []) or bool(request.top_logprobs)


# -- responses -------------------------------------------------------------------------------


def usage_body(usage: Usage) -> dict[str, Any]:
    """Token counts in the Responses API's shape (``input_tokens`` includes cached ones)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def sse(event: dict[str, Any]) -> bytes:
    """One named server-sent event: ``event: <type>`` and its JSON ``data``."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


@dataclass
class ResponseEvents:
    """Translates one stream of engine events into the Responses API's stream events.

    Thinking opens a ``reasoning`` item and text a ``message`` item; an item closes when
    another kind begins. A parsed tool call is a whole ``function_call`` item (its arguments in
    one delta); an unparseable call stays visible as text, as on the other routes. The
    non-streamed body is folded from the same events (:meth:`fold`), so both agree.

    Args:
        skeleton: The response's fields that echo the request.
        on_finish: Called with the finished ``response`` object, once, when ``Done`` arrives.
    """

    skeleton: dict[str, Any]
    on_finish: Callable[[dict[str, Any]], None] | None = None
    failure: str | None = None
    response: dict[str, Any] | None = None
    _sequence: int = field(default=0, init=False)
    _items: list[dict[str, Any]] = field(default_factory=list, init=False)
    _open: dict[str, Any] | None = field(default=None, init=False)
    # Log-probabilities of tokens whose text has not come yet (the parser may hold it back).
    _logprobs: list[dict[str, Any]] = field(default_factory=list, init=False)

    def start(self) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        body = self._body("in_progress")
        return [
            self._emit("response.created", response=body),
            self._emit("response.in_progress", response=body),
        ]

    def event(self, event: Event) -> list[dict[str, Any]]:
        """The stream events for one engine event (raw tool-call text has none).

        A token's log-probability rides on the next ``output_text`` delta, which holds its
        text; those of reasoning and tool-call tokens are not the answer's text and are not
        sent (OpenAI gives log-probabilities of output text only).
        """
        if isinstance(event, TokenLogprob):
            if not event.reasoning:
                self._logprobs.append(event.to_openai())
            return []
        if isinstance(event, ThinkingDelta):
            return [*self._part("reasoning"), self._delta(event.text)]
        if isinstance(event, ContentDelta | ToolCallError):
            text = event.text if isinstance(event, ContentDelta) else event.raw
            return [*self._part("message"), self._delta(text)]
        if isinstance(event, ToolCall):
            self._logprobs = []
            return [*self._close("completed"), *self._function_call(event)]
        if isinstance(event, Done):
            return self._done(event)
        return []

    def fold(self, events: Sequence[Event]) -> dict[str, Any]:
        """A finished stream of engine events as one ``response`` object (the same as streamed)."""
        for event in events:
            self.event(event)
        return self.response if self.response is not None else self._body("incomplete")

    def fail(self, message: str) -> None:
        """Note that generation failed after the stream began; :meth:`end` reports it."""
        self.failure = message

    def end(self) -> list[dict[str, Any]]:
        """After the last event: ``response.failed`` if generation failed midway."""
        if self.failure is None:
            return []
        body = self._body("failed")
        body["error"] = {"code": "server_error", "message": self.failure}
        return [self._emit("response.failed", response=body)]

    def _emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _body(self, status: str) -> dict[str, Any]:
        return {**self.skeleton, "status": status, "output": copy.deepcopy(self._items)}

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self._items) - 1}

    def _part(self, kind: str) -> list[dict[str, Any]]:
        if self._open is not None and self._open["type"] == kind:
            return []
        events = self._close("completed")
        if kind == "reasoning":
            item: dict[str, Any] = {"type": kind, "id": self._item_id("rs"), "summary": []}
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = {"type": kind, "id": self._item_id("msg"), "role": "assistant"}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events.append(self._added({**item, "status": "in_progress", "content": []}))
        self._open = self._items[-1]
        self._open["content"].append(part)
        where = self._where()
        part_added = self._emit(
            "response.content_part.added", **where, content_index=0, part=dict(part)
        )
        return [*events, part_added]

    def _item_id(self, prefix: str) -> str:
        return f"{prefix}_{self.skeleton['id'].removeprefix('resp_')}_{len(self._items)}"

    def _added(self, item: dict[str, Any]) -> dict[str, Any]:
        self._items.append(item)
        index = len(self._items) - 1
        return self._emit(
            "response.output_item.added", output_index=index, item=copy.deepcopy(item)
        )

    def _text_kind(self) -> str:
        """The open item's text events' name."""
        assert self._open is not None
        return "reasoning_text" if self._open["type"] == "reasoning" else "output_text"

    def _delta(self, text: str) -> dict[str, Any]:
        kind = self._text_kind()
        part = self._open["content"][0]  # type: ignore[index]
        part["text"] += text
        extra: dict[str, Any] = {}
        if kind == "output_text":
            extra["logprobs"], self._logprobs = self._logprobs, []
            part["logprobs"].extend(extra["logprobs"])
        return self._emit(
            f"response.{kind}.delta", **self._where(), content_index=0, delta=text, **extra
        )

    def _close(self, status: str) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        kind, where = self._text_kind(), self._where()
        item, part = self._open, self._open["content"][0]
        extra = {"logprobs": list(part["logprobs"])} if kind == "output_text" else {}
        item["status"] = status
        self._open = None
        return [
            self._emit(
                f"response.{kind}.done", **where, content_index=0, text=part["text"], **extra
            ),
            self._emit("response.content_part.done", **where, content_index=0, part=dict(part)),
            self._emit(
                "response.output_item.done",
                output_index=where["output_index"],
                item=copy.deepcopy(item),
            ),
        ]

    def _function_call(self, call: ToolCall) -> list[dict[str, Any]]:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        item: dict[str, Any] = {
            "type": "function_call",
            "id": self._item_id("fc"),
            "call_id": call.id,
            "name": call.name,
            "arguments": "",
            "status": "in_progress",
        }
        added = self._added(item)
        where = {"item_id": item["id"], "output_index": len(self._items) - 1}
        item.update(arguments=arguments, status="completed")
        return [
            added,
            self._emit("response.function_call_arguments.delta", **where, delta=arguments),
            self._emit(
                "response.function_call_arguments.done",
                **where,
                arguments=arguments,
                name=call.name,
            ),
            self._emit(
                "response.output_item.done", output_index=where["output_index"], item=dict(item)
            ),
        ]

    def _done(self, done: Done) -> list[dict[str, Any]]:
        cut = done.finish_reason == "length"
        status = {"length": "incomplete", "cancelled": "cancelled"}.get(
            done.finish_reason, "completed"
        )
        events = []
        if self._logprobs and self._open is not None and self._open["type"] == "message":
            # Tokens that added no text (the end-of-turn token): on an empty delta, so a
            # streamed answer's log-probabilities are the same as the whole one's.
            events.append(self._delta(""))
        events += self._close("incomplete" if cut else "completed")
        body = self._body(status)
        body["completed_at"] = int(time.time())
        body["usage"] = usage_body(done.usage)
        if cut:
            body["incomplete_details"] = {"reason": "max_output_tokens"}
        self.response = body
        if self.on_finish is not None:
            self.on_finish(body)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*events, self._emit(kind, response=body)]
