"""Serving one generation over HTTP: streamed as SSE or folded into one JSON body.

Nothing here touches MLX: a generation is an async stream of events from ``engine.stream``,
pulled while a second task watches for the client going away, so a disconnect cancels the
request within one engine step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mlxnb._server import openai as oa
from mlxnb._server.errors import ApiError, api_error, error_body
from mlxnb.events import Done, Event, Usage

log = logging.getLogger("mlxnb.server")


@dataclass
class ServerStats:
    """Live counters of one app (read by the notebook handle).

    Attributes:
        served: Generations answered in full.
        failed: Requests answered with an error status or event.
        cancelled: Generations cut short by the client.
        active: Generations in progress.
    """

    served: int = 0
    failed: int = 0
    cancelled: int = 0
    active: int = 0
    started: float = field(default_factory=time.time)


Renderer = Callable[[Event], list[bytes]]


class Generation(Response):
    """Serves one generation, streamed as SSE or folded into one JSON body.

    The first event is awaited before any header is sent, so refusals (busy, bad template)
    still get their own status code. A second task watches ``receive`` for the client leaving
    and cancels the pump; closing the engine's stream then cancels the request.
    """

    def __init__(
        self,
        events: AsyncIterator[Event],
        stats: ServerStats,
        *,
        stream: Callable[[], list[bytes]] | None,
        render: Renderer,
        fold: Callable[[list[Event]], dict[str, Any]],
    ) -> None:
        super().__init__()
        self._events, self._stats = events, stats
        self._start, self._render, self._fold = stream, render, fold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope, self._receive = scope, receive
        self._stats.active += 1
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stats.active -= 1
            if not pump.done():
                self._stats.cancelled += 1
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]

    async def _pump(self, send: Send) -> None:
        try:
            first = await self._events.__anext__()
        except StopAsyncIteration:
            first = Done("error", Usage(), "the engine ended the stream without events")
        except Exception as error:
            await self._fail(api_error(error), send)
            return
        if self._start is None:
            await self._whole(first, send)
        else:
            await self._streamed(first, self._start, send)

    async def _whole(self, first: Event, send: Send) -> None:
        events = [first]
        try:
            async for event in self._events:
                events.append(event)
        except Exception as error:
            await self._fail(api_error(error), send)
            return
        last = events[-1]
        if isinstance(last, Done) and last.finish_reason == "error":
            message = last.error or "generation failed"
            await self._fail(ApiError(500, message, "server_error", "generation_failed"), send)
            return
        self._stats.served += 1
        await JSONResponse(self._fold(events))(self._scope, self._receive, send)

    async def _fail(self, error: ApiError, send: Send) -> None:
        self._stats.failed += 1
        await error.response()(self._scope, self._receive, send)

    async def _streamed(self, first: Event, start: Callable[[], list[bytes]], send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        failed = False
        try:
            await _send_body(send, start() + self._render_one(first))
            failed = isinstance(first, Done) and first.finish_reason == "error"
            async for event in self._events:
                await _send_body(send, self._render_one(event))
                failed = failed or (isinstance(event, Done) and event.finish_reason == "error")
        except Exception as error:
            failed = True
            failure = api_error(error)
            await _send_body(send, [oa.sse(error_body(failure.message, failure.type))])
        if failed:
            self._stats.failed += 1
        else:
            self._stats.served += 1
        await _send_body(send, [oa.sse("[DONE]")])
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _render_one(self, event: Event) -> list[bytes]:
        if isinstance(event, Done) and event.finish_reason == "error":
            message = event.error or "generation failed"
            return [oa.sse(error_body(message, "server_error", "generation_failed"))]
        return self._render(event)


async def _send_body(send: Send, parts: list[bytes]) -> None:
    if parts:
        await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
