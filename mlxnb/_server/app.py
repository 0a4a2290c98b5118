"""The OpenAI-compatible HTTP API: :func:`create_app` builds a FastAPI app around engines.

Every endpoint is ``async`` and reaches the model only through ``engine.stream``: the engine's
worker thread owns MLX, and this module never calls MLX, threads or executors. Serving one
generation (SSE or JSON, with disconnect watching) lives in :mod:`mlxnb._server.response`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from mlxnb._engine.request import RequestMeta
from mlxnb._engine.tool_choice import check_tool_choice
from mlxnb._ids import new_request_id
from mlxnb._server import completions as cp
from mlxnb._server import openai as oa
from mlxnb._server.anthropic import for_path
from mlxnb._server.errors import ApiError, ErrorBody, error_body, validation_error
from mlxnb._server.messages_route import add_messages_routes
from mlxnb._server.middleware import Guard
from mlxnb._server.response import Generation, ServerStats
from mlxnb._server.responses_route import add_responses_routes
from mlxnb._server.schemas import MAX_CHOICES, ChatCompletionRequest, CompletionRequest
from mlxnb._server.source import (
    EngineSource,
    Limits,
    ServedEngine,
    SingleEngine,
    as_source,
    http_meta,
)
from mlxnb._server.unserved import CHAT_UNSERVED, COMPLETION_UNSERVED, Unserved, first_unserved
from mlxnb.errors import InvalidRequestError, ModelNotFoundError
from mlxnb.events import Done, Event
from mlxnb.events import Usage as EngineUsage


def create_app(
    engine_or_pool: ServedEngine | EngineSource,
    *,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """Build the OpenAI-compatible API around an engine (or a pool of them).

    Args:
        engine_or_pool: An :class:`~mlxnb.Engine`, or an :class:`EngineSource` serving many.
        api_key: When set, every ``/v1`` route requires ``Authorization: Bearer <api_key>`` (or
            ``x-api-key: <api_key>``, as the Anthropic SDK sends it).
        cors_origins: Origins allowed to call the API from a browser (CORS is off without).
        limits: Body size and ``max_tokens`` limits.

    Returns:
        A new FastAPI app; ``app.state.stats`` holds its :class:`ServerStats`.
    """
    source = as_source(engine_or_pool)
    limits = limits or Limits()
    app = FastAPI(title="mlxnb", version="1", docs_url=None, redoc_url=None)
    app.state.stats = ServerStats()
    app.state.source = source
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "x-api-key", "anthropic-version"],
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return for_path(request.url.path, validation_error(error.errors())).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        body = error_body(str(error.detail), kind, f"http_{error.status_code}")
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    add_routes(app, source, limits)
    add_messages_routes(app, source, limits, app.state.stats)
    add_responses_routes(app, source, limits, app.state.stats)
    return app


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in [
        (400, "Malformed JSON or a request the chat template rejects"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model"),
        (413, "Request body too large"),
        (422, "A field has the wrong type or is out of range"),
        (429, "The engine's queue is full; retry later"),
        (503, "The engine is closed"),
    ]
}


def _engine(source: EngineSource, model: str) -> ServedEngine:
    try:
        return source.engine_for(model)
    except (ModelNotFoundError, KeyError):
        available = ", ".join(source.model_ids()) or "none"
        raise ApiError(
            404,
            f"model {model!r} not found; available: {available}",
            "invalid_request_error",
            "model_not_found",
        ) from None


def _check_max_tokens(call: oa.EngineCall, limits: Limits) -> None:
    asked = call.options.get("max_tokens")
    if asked is not None and asked > limits.max_tokens:
        raise ApiError(
            422,
            f"max_tokens: at most {limits.max_tokens} on this server",
            "invalid_request_error",
            "invalid_value",
            "max_tokens",
        )


def _unsupported(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", "invalid_request_error", "unsupported_value", field)


def _check_unserved(extra: dict[str, Any] | None, unserved: Mapping[str, Unserved]) -> None:
    """Refuse the first unknown field that would change the answer, naming it."""
    found = first_unserved(extra, unserved)
    if found is not None:
        raise _unsupported(*found)


def _check_chat(body: ChatCompletionRequest) -> None:
    """Refuse what a chat request cannot be served as, naming the field.

    A ``tool_choice`` the tools cannot satisfy (the engine checks the same for every door; here
    the error can also say which field), or a last message to carry on that is not the
    assistant's (a template would cut the prompt inside it without complaint).
    """
    continues = oa.continues_final_message(body)
    extra = dict(body.model_extra or {})
    if continues and extra.get("add_generation_prompt") is False:
        # vLLM refuses both at once, so its clients send this pair: it asks for what is served.
        del extra["add_generation_prompt"]
    _check_unserved(extra, CHAT_UNSERVED)
    if continues and body.messages[-1].role != "assistant":
        raise ApiError(
            400,
            "continue_final_message: the last message must be the assistant's, to carry on",
            "invalid_request_error",
            "invalid_value",
            "continue_final_message",
        )
    tools = [tool.model_dump() for tool in body.tools or []]
    try:
        check_tool_choice(tools, oa.tool_choice(body))
    except InvalidRequestError as error:
        raise ApiError(
            400, f"tool_choice: {error}", "invalid_request_error", "invalid_value", "tool_choice"
        ) from None


def _check_completion(body: CompletionRequest, call: oa.EngineCall) -> None:
    """Refuse what ``/v1/completions`` does not serve, naming the field."""
    _check_unserved(body.model_extra, COMPLETION_UNSERVED)
    if body.suffix:
        raise _unsupported("suffix", "fill-in-the-middle is not supported")
    if len(call.prompts) * call.n > MAX_CHOICES:
        raise ApiError(
            422,
            f"n: {len(call.prompts)} prompts times n={call.n} asks for "
            f"{len(call.prompts) * call.n} choices; at most {MAX_CHOICES} per request",
            "invalid_request_error",
            "invalid_value",
            "n",
        )
    if body.best_of is not None and body.best_of != body.n:
        raise ApiError(
            400,
            f"best_of: only best_of equal to n ({body.n}) is supported, got {body.best_of}",
            "invalid_request_error",
            "unsupported_value",
            "best_of",
        )
    if body.logprobs is not None and (
        isinstance(body.logprobs, bool) or not 0 <= body.logprobs <= MAX_COMPLETION_LOGPROBS
    ):
        raise ApiError(
            400,
            f"logprobs: the number of alternatives per token, 0 to {MAX_COMPLETION_LOGPROBS}"
            f" (got {body.logprobs!r})",
            "invalid_request_error",
            "invalid_value",
            "logprobs",
        )


MAX_COMPLETION_LOGPROBS = 5
"""OpenAI's limit for ``/v1/completions``' ``logprobs``."""


def add_routes(app: FastAPI, source: EngineSource, limits: Limits) -> None:
    """Register ``/health`` and the ``/v1`` routes on ``app``."""
    stats: ServerStats = app.state.stats
    created = int(time.time())

    @app.get("/health", tags=["server"])
    async def health() -> JSONResponse:
        states = [str(source.state(m).get("state")) for m in source.model_ids()]
        status = "ok" if "ready" in states or not isinstance(source, SingleEngine) else states[0]
        status = "closed" if status == "unloaded" else status
        body = {"status": status, "models": source.model_ids(), "active": stats.active}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    def card(model: str) -> dict[str, Any]:
        return {**oa.model_card(model, created), **source.state(model), "id": model}

    @app.get("/v1/models", tags=["openai", "anthropic"], responses=_ERRORS)
    async def models() -> dict[str, Any]:
        ids = source.model_ids()
        # Anthropic's page fields beside OpenAI's list: one page holds every model.
        first, last = (ids[0], ids[-1]) if ids else (None, None)
        data = [card(m) for m in ids]
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": first,
            "last_id": last,
        }

    @app.get("/v1/models/{model:path}", tags=["openai"], responses=_ERRORS)
    async def model(model: str) -> dict[str, Any]:
        _engine(source, model)  # 404 listing what is served
        return card(model)

    @app.post("/v1/chat/completions", tags=["openai"], responses=_ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        engine = _engine(source, body.model)
        _check_chat(body)
        call = oa.chat_call(body)
        _check_max_tokens(call, limits)
        rid = f"chatcmpl-{_new_id()}"
        name = str(engine.model_id)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        n, created = body.n, int(time.time())
        chunks = [
            oa.ChatChunks(
                rid, name, include_usage, created, index=i, usage_chunk=include_usage and n == 1
            )
            for i in range(n)
        ]
        usages: dict[int, EngineUsage] = {}

        def meta(index: int) -> RequestMeta:
            # One audit row per choice; the n samples of the prompt prefill it once.
            choice = http_meta(request, rid if n == 1 else f"{rid}-{index}")
            return replace(choice, sample_group=rid if n > 1 else None)

        def render(index: int, event: Event) -> list[bytes]:
            if isinstance(event, Done):
                usages[index] = event.usage
            return [oa.sse(c) for c in chunks[index].event(event)]

        def end() -> list[bytes]:
            if n == 1 or not include_usage:
                return []
            total = oa.total_usage([usages[i] for i in sorted(usages)], n)
            kind = "chat.completion.chunk"
            usage = oa.usage_chunk(id=rid, object=kind, created=created, model=name, usage=total)
            return [oa.sse(usage)]

        streamed = bool(body.stream)
        streams = [call.stream(engine, meta(i), streamed=streamed, sample=i) for i in range(n)]
        return Generation(
            streams,
            stats,
            stream=(lambda: [oa.sse(c.start()) for c in chunks]) if streamed else None,
            render=render,
            end=end,
            fold=lambda choices: oa.chat_completions(choices, id=rid, model=name, created=created),
        )

    @app.post("/v1/completions", tags=["openai"], responses=_ERRORS)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        engine = _engine(source, body.model)
        call = cp.completion_call(body)
        _check_max_tokens(call, limits)
        _check_completion(body, call)
        rid = f"cmpl-{_new_id()}"
        name = str(engine.model_id)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def echo(index: int) -> str:
            # Called once the engine has answered, so its tokenizer is loaded.
            prompt = call.prompts[index]
            return prompt if isinstance(prompt, str) else str(engine.tokenizer.decode(list(prompt)))

        chunks = cp.TextChunks(
            rid, name, include_usage=include_usage, n=call.n, echo=echo if body.echo else None
        )
        choices = call.choices()
        # One engine request per choice, all submitted at once so the engine batches them; each
        # has its own audit row (its request id is the completion id and the choice index).
        streams = [
            engine.stream(
                [],
                prompt=prompt,
                meta=replace(
                    http_meta(request, rid if len(choices) == 1 else f"{rid}-{index}"),
                    # The n samples of one prompt prefill it once.
                    sample_group=f"{rid}/{index // call.n}" if call.n > 1 else None,
                ),
                prefill_progress=bool(body.stream),
                **options,
            )
            for index, (prompt, options) in enumerate(choices)
        ]
        return Generation(
            streams,
            stats,
            stream=(lambda: [oa.sse(c) for c in chunks.start(len(streams))])
            if body.stream
            else None,
            render=lambda index, event: [oa.sse(c) for c in chunks.event(index, event)],
            end=lambda: [oa.sse(c) for c in chunks.end()],
            fold=chunks.whole,
        )


def _new_id() -> str:
    return new_request_id()
