"""``/v1/responses``: OpenAI's Responses API served from the same engines as ``/v1``.

The body is validated (:mod:`mlxnb._server.responses_schemas`), translated
(:mod:`mlxnb._server.responses`), and served by :class:`~mlxnb._server.response.Generation` like
the chat route: the first event is awaited before headers, so refusals keep their status, and a
client that leaves cancels the request. Finished responses are kept in a bounded per-app
:class:`ResponseStore`, so a later request can continue one by ``previous_response_id``; the
audit log keeps every turn under its response id either way.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from mlxnb._ids import new_request_id
from mlxnb._server.errors import ApiError, ErrorBody, api_error
from mlxnb._server.response import Generation, ServerStats
from mlxnb._server.responses import (
    RESPONSES_PATH,
    ResponseEvents,
    input_items,
    responses_call,
    sse,
    unsupported,
)
from mlxnb._server.responses_schemas import (
    InputItem,
    InputTokensRequest,
    ReasoningConfig,
    ResponsesRequest,
)
from mlxnb._server.source import EngineSource, Limits, ServedEngine, http_meta
from mlxnb._server.unserved import RESPONSES_UNSERVED, first_unserved
from mlxnb.errors import ModelNotFoundError
from mlxnb.events import Done, Event

STORE_CAPACITY = 1024
"""Responses one app keeps for ``previous_response_id`` (the least recently used go first)."""

_ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


@dataclass(frozen=True)
class StoredResponse:
    """A finished response and the conversation it ends.

    Attributes:
        body: The ``response`` object as it was answered.
        items: Every input and output item of the conversation so far, oldest first (what a
            request continuing it by ``previous_response_id`` is prepended with).
        conversation_id: The id of the chain's first response (the audit rows' conversation).
    """

    body: dict[str, Any]
    items: tuple[InputItem, ...]
    conversation_id: str


class ResponseStore:
    """Finished responses by id: a bounded, least-recently-used map (used on one loop only).

    Args:
        capacity: Most responses kept; storing one more forgets the least recently used.
    """

    def __init__(self, capacity: int = STORE_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, marked as used now; ``None`` if unknown or forgotten."""
        stored = self._entries.get(response_id)
        if stored is not None:
            self._entries.move_to_end(response_id)
        return stored

    def put(self, response_id: str, stored: StoredResponse) -> None:
        """Keep a response, forgetting the least recently used beyond the capacity."""
        self._entries[response_id] = stored
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def delete(self, response_id: str) -> bool:
        """Forget a response; whether it was there."""
        return self._entries.pop(response_id, None) is not None


def check(request: ResponsesRequest) -> None:
    """Refuse what would change the answer but is not served, naming the field.

    Raises:
        ApiError: 400 for a ``tool_choice`` other than a mode or a function,
            ``truncation="auto"``, background mode, ``max_tool_calls``, conversations, stored
            prompts, or another server's field that would change the answer
            (:mod:`mlxnb._server.unserved`).
    """
    found = first_unserved(request.model_extra, RESPONSES_UNSERVED)
    if found is not None:
        raise unsupported(*found)
    choice = request.tool_choice
    if isinstance(choice, dict) and (choice.get("type") != "function" or not choice.get("name")):
        raise unsupported(
            "tool_choice",
            f"{choice.get('type')!r} is not supported: use 'auto', 'none', 'required' or "
            "{'type': 'function', 'name': ...}",
        )
    if request.truncation == "auto":
        raise unsupported("truncation", "'auto' is not supported: input is never dropped")
    if request.background:
        raise unsupported("background", "background responses are not supported")
    if request.max_tool_calls is not None:
        raise unsupported("max_tool_calls", "a limit on tool calls is not enforced")
    if request.conversation is not None:
        raise unsupported("conversation", "conversations are not served; use previous_response_id")
    if request.prompt is not None:
        raise unsupported("prompt", "stored prompts are not served; send input and instructions")


def skeleton(request: ResponsesRequest, *, id: str, model: str, created: int) -> dict[str, Any]:
    """The ``response`` object's fields that echo the request (all but status and output)."""
    format_ = request.text.format if request.text is not None else None
    return {
        "id": id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": (request.reasoning or ReasoningConfig.model_validate({})).model_dump(),
        "store": request.store is not False,
        "temperature": request.temperature,
        "text": {
            "format": format_.model_dump(by_alias=True, exclude_none=True)
            if format_ is not None
            else {"type": "text"}
        },
        "tool_choice": request.tool_choice or "auto",
        "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or []],
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": request.metadata or {},
    }


def _engine(source: EngineSource, model: str) -> ServedEngine:
    try:
        engine: ServedEngine = source.engine_for(model)
    except (ModelNotFoundError, KeyError):
        available = ", ".join(source.model_ids()) or "none"
        message = f"model {model!r} not found; available: {available}"
        raise ApiError(404, message, "invalid_request_error", "model_not_found", "model") from None
    return engine


def _not_found(field: str, response_id: str) -> ApiError:
    message = f"{field}: no stored response {response_id!r} (unknown, not stored, or forgotten)"
    return ApiError(404, message, "invalid_request_error", "not_found", field)


async def _guarded(
    events: AsyncIterator[Event], fail: Callable[[str], None]
) -> AsyncIterator[Event]:
    """A streamed reply's events; a failure once it has begun ends it with ``response.failed``.

    A failure before the first event is raised (``Generation`` answers it with its status).
    """
    started = False
    try:
        async for event in events:
            if isinstance(event, Done) and event.finish_reason == "error":
                message = event.error or "generation failed"
                if not started:
                    raise ApiError(500, message, "server_error", "generation_failed")
                fail(message)
                return
            started = True
            yield event
    except ApiError:
        raise
    except Exception as error:
        if not started:
            raise
        fail(str(error) or type(error).__name__)
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()  # cancels the engine request if the reply ended early


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in [
        (400, "A field or item the server cannot serve, named"),
        (404, "Unknown model or previous_response_id"),
        (422, "A field has the wrong type or is out of range"),
        (429, "The engine's queue is full; retry later"),
    ]
}


def add_responses_routes(
    app: FastAPI,
    source: EngineSource,
    limits: Limits,
    stats: ServerStats,
    *,
    capacity: int = STORE_CAPACITY,
) -> ResponseStore:
    """Register ``POST /v1/responses`` and ``GET``/``DELETE /v1/responses/{id}`` on ``app``.

    Returns:
        The app's store of finished responses (also ``app.state.responses``).
    """
    store = ResponseStore(capacity)
    app.state.responses = store

    def previous_of(body: ResponsesRequest) -> StoredResponse | None:
        """The stored response ``body`` continues (``previous_response_id``), if it names one."""
        if body.previous_response_id is None:
            return None
        previous = store.get(body.previous_response_id)
        if previous is None:
            raise _not_found("previous_response_id", body.previous_response_id)
        return previous

    @app.post(RESPONSES_PATH, tags=["openai"], responses=_ERRORS)
    async def create(body: ResponsesRequest, request: Request) -> Response:
        engine = _engine(source, body.model)
        check(body)
        previous = previous_of(body)
        history = previous.items if previous is not None else ()
        call = responses_call(body, history)
        if body.max_output_tokens is not None and body.max_output_tokens > limits.max_tokens:
            raise ApiError(
                422,
                f"max_output_tokens: at most {limits.max_tokens} on this server",
                "invalid_request_error",
                "invalid_value",
                "max_output_tokens",
            )
        rid = f"resp_{new_request_id().replace('-', '')}"
        conversation = previous.conversation_id if previous is not None else rid
        items = (*history, *input_items(body))

        def finish(response: dict[str, Any]) -> None:
            if body.store is not False and response["status"] != "cancelled":
                output = tuple(_ITEMS.validate_python(response["output"]))
                store.put(rid, StoredResponse(response, (*items, *output), conversation))

        name = str(engine.model_id)
        out = ResponseEvents(
            skeleton(body, id=rid, model=name, created=int(time.time())),
            on_finish=finish,
        )
        meta = http_meta(request, rid, endpoint=RESPONSES_PATH, conversation_id=conversation)
        events = call.stream(engine, meta, streamed=bool(body.stream))
        return Generation(
            [_guarded(events, out.fail) if body.stream else events],
            stats,
            stream=(lambda: [sse(e) for e in out.start()]) if body.stream else None,
            render=lambda index, event: [sse(e) for e in out.event(event)],
            end=lambda: [sse(e) for e in out.end()],
            fold=lambda choices: out.fold(choices[0]),
        )

    @app.post(RESPONSES_PATH + "/input_tokens", tags=["openai"], responses=_ERRORS)
    async def input_tokens(body: InputTokensRequest) -> dict[str, Any]:
        model = body.model
        if model is None:
            served = source.model_ids()
            if len(served) != 1:
                raise ApiError(
                    400,
                    f"model: name one of the served models ({', '.join(served)})",
                    "invalid_request_error",
                    "missing_required_parameter",
                    "model",
                )
            model = served[0]
        engine = _engine(source, model)
        check(body)
        previous = previous_of(body)
        call = responses_call(body, previous.items if previous is not None else ())
        try:
            tokens = await call.count_tokens(engine)
        except Exception as error:
            raise api_error(error) from error
        return {"object": "response.input_tokens", "input_tokens": tokens}

    @app.get(RESPONSES_PATH + "/{response_id}", tags=["openai"], responses=_ERRORS)
    async def retrieve(response_id: str) -> dict[str, Any]:
        stored = store.get(response_id)
        if stored is None:
            raise _not_found("response_id", response_id)
        return stored.body

    @app.delete(RESPONSES_PATH + "/{response_id}", tags=["openai"], responses=_ERRORS)
    async def delete(response_id: str) -> dict[str, Any]:
        if not store.delete(response_id):
            raise _not_found("response_id", response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    return store
