"""``POST /v1/messages``: Anthropic's Messages API served from the same engines as ``/v1``.

The body is validated (:mod:`mlxnb._server.anthropic_schemas`), translated
(:mod:`mlxnb._server.anthropic`), and served by :class:`~mlxnb._server.response.Generation` like
the OpenAI routes: the first event is awaited before headers, so refusals keep their status, and
a client that leaves cancels the request. ``POST /v1/messages/count_tokens`` renders the same
body's prompt and counts it (agents ask before they send a long context). Every error on these
routes is Anthropic-shaped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from mlxnb._ids import new_request_id
from mlxnb._server.anthropic import (
    MESSAGES_PATH,
    MessageEvents,
    MessagesError,
    invalid,
    message_body,
    messages_call,
    messages_error,
    sse,
)
from mlxnb._server.anthropic_schemas import CountTokensRequest, MessagesRequest
from mlxnb._server.errors import api_error
from mlxnb._server.response import Generation, ServerStats
from mlxnb._server.source import EngineSource, Limits, ServedEngine, http_meta
from mlxnb.errors import ModelNotFoundError
from mlxnb.events import Done, Event


def _engine(source: EngineSource, model: str) -> ServedEngine:
    try:
        engine: ServedEngine = source.engine_for(model)
    except (ModelNotFoundError, KeyError):
        available = ", ".join(source.model_ids()) or "none"
        message = f"model {model!r} not found; available: {available}"
        raise MessagesError(404, message, "not_found_error", "model_not_found", "model") from None
    return engine


async def _guarded(
    events: AsyncIterator[Event], streamed: bool, fail: Callable[[str], None]
) -> AsyncIterator[Event]:
    """``events`` with their failures in Anthropic's shape.

    A failure before the first event, or anywhere in a non-streamed reply, is raised as a
    :class:`MessagesError` (``Generation`` answers it with its status). Once a stream has
    begun, a failure is handed to ``fail`` and the stream ends, so the stream's closing
    ``error`` event (:meth:`MessageEvents.end`) reports it: the SDK raises on that event and
    would skip ``Generation``'s own, OpenAI-shaped one.
    """
    started = False
    try:
        async for event in events:
            if isinstance(event, Done) and event.finish_reason == "error":
                message = event.error or "generation failed"
                if started and streamed:
                    fail(message)
                    return
                raise MessagesError(500, message, "api_error", "generation_failed")
            started = True
            yield event
    except MessagesError:
        raise
    except Exception as error:
        failure = api_error(error)
        if started and streamed:
            fail(failure.message)
            return
        raise messages_error(failure) from error
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()  # cancels the engine request if the reply ended early


def add_messages_routes(
    app: FastAPI, source: EngineSource, limits: Limits, stats: ServerStats
) -> None:
    """Register ``POST /v1/messages`` on ``app``."""

    @app.post(MESSAGES_PATH, tags=["anthropic"])
    async def messages(body: MessagesRequest, request: Request) -> Response:
        engine = _engine(source, body.model)
        if body.max_tokens > limits.max_tokens:
            raise invalid("max_tokens", f"at most {limits.max_tokens} on this server")
        call = messages_call(body)
        rid = f"msg_{new_request_id().replace('-', '')}"
        name = str(engine.model_id)
        out = MessageEvents(rid, name)
        meta = http_meta(request, rid, endpoint=MESSAGES_PATH)
        events = call.stream(engine, meta, streamed=bool(body.stream))
        return Generation(
            [_guarded(events, body.stream, out.fail)],
            stats,
            stream=(lambda: [sse(e) for e in out.start()]) if body.stream else None,
            render=lambda index, event: [sse(e) for e in out.event(event)],
            end=lambda: [sse(e) for e in out.end()],
            fold=lambda choices: message_body(choices[0], id=rid, model=name),
        )

    @app.post(MESSAGES_PATH + "/count_tokens", tags=["anthropic"])
    async def count_tokens(body: CountTokensRequest) -> dict[str, int]:
        engine = _engine(source, body.model)
        call = messages_call(body)
        try:
            tokens = await call.count_tokens(engine)
        except Exception as error:
            raise messages_error(api_error(error)) from error
        return {"input_tokens": tokens}
