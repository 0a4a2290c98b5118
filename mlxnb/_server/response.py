"""Serving one generation over HTTP: streamed as SSE or folded into one JSON body.

Nothing here touches MLX: a generation is one async stream of events from ``engine.stream``
per choice, the streams pulled concurrently and merged (:class:`Choices`) while a second task
watches for the client going away, so a disconnect cancels every choice's request within one
engine step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mlxnb._server import openai as oa
from mlxnb._server.errors import ApiError, api_error, error_body
from mlxnb.events import Delta, Done, Event, PrefillProgress, Usage, continues_text, joined_run

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


Renderer = Callable[[int, Event], list[bytes]]
"""The SSE bytes for one event of choice ``index``."""


class _End:
    """Queued by a choice's pulling task after its last event."""


_END = _End()


class Choices:
    """The event streams of a request's choices, pulled concurrently and merged in arrival order.

    One task per stream pulls its events into a shared queue, so the engine batches the
    choices and each event is served as soon as it comes; iterating yields ``(index, event)``.
    :meth:`start` waits until every choice has answered, so a refusal of any of them (busy,
    bad prompt) is raised before anything is sent. :meth:`aclose` cancels every pulling task,
    which closes its engine stream and so cancels its request, then closes every stream
    (one whose task never ran, too): whichever way a response ends, no choice keeps generating.

    Consecutive deltas of one choice that are queued together (the engine hands a fast stream
    over in batches, one every few tens of milliseconds) come out joined into one
    (:func:`~mlxnb.events.joined_run`): one chunk for a batch's text instead of one per
    token. With a chunk per token, a fast model on the H200 served 0.90 of the aggregate
    tokens/s at 8 clients and 0.81 at 32 (``bench/FINDINGS.md``).
    """

    def __init__(self, streams: Sequence[AsyncIterator[Event]]) -> None:
        self._streams = list(streams)
        self._queue: asyncio.Queue[tuple[int, Event | Exception | _End]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        #: Items taken from the queue but not served yet (by :meth:`start`, or to look behind
        #: a delta), served before the queue's.
        self._held: deque[tuple[int, Event | Exception | _End]] = deque()
        self._open = len(self._streams)

    def __len__(self) -> int:
        return len(self._streams)

    async def _pull(self, index: int, stream: AsyncIterator[Event]) -> None:
        put = self._queue.put_nowait
        try:
            empty = True
            async for event in stream:
                empty = False
                put((index, event))
            if empty:
                put((index, Done("error", Usage(), "the engine ended the stream without events")))
        except Exception as error:
            put((index, error))
        put((index, _END))

    async def _take(self) -> tuple[int, Event] | None:
        """The next event of any choice; ``None`` once all ended. A choice's error is raised."""
        while self._open:
            index, item = self._held.popleft() if self._held else await self._queue.get()
            if isinstance(item, _End):
                self._open -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                return index, item
        return None

    async def start(self) -> None:
        """Start pulling every stream and wait until each has answered with an event.

        Raises:
            Exception: The first error a choice raised instead of answering (its refusal).
        """
        self._tasks = [
            asyncio.ensure_future(self._pull(index, stream))
            for index, stream in enumerate(self._streams)
        ]
        answered: set[int] = set()
        taken: list[tuple[int, Event]] = []
        while len(answered) < len(self._streams):
            item = await self._take()
            if item is None:  # cannot happen: every stream queues an event or an error first
                break
            answered.add(item[0])
            taken.append(item)
        self._held.extendleft(reversed(taken))

    def __aiter__(self) -> Choices:
        return self

    async def __anext__(self) -> tuple[int, Event]:
        item = await self._take()
        if item is None:
            raise StopAsyncIteration
        return item[0], self._joined(*item)

    def _joined(self, index: int, event: Event) -> Event:
        """``event`` with the deltas of its choice queued right behind it joined in."""
        if not isinstance(event, Delta):
            return event
        run: list[Delta] = [event]
        while self._held or not self._queue.empty():
            following = self._held.popleft() if self._held else self._queue.get_nowait()
            of, item = following
            if of == index and isinstance(item, Delta) and continues_text(item, event):
                run.append(item)
                continue
            self._held.appendleft(following)
            break
        return joined_run(run)

    async def aclose(self) -> None:
        """Cancel every choice still generating and close every stream."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]


class Generation(Response):
    """Serves one generation of one or more choices, streamed as SSE or folded into one body.

    Every choice's first event is awaited before any header is sent, so refusals (busy, bad
    template, bad prompt) still get their own status code. A second task watches ``receive``
    for the client leaving and cancels the pump; closing the :class:`Choices` then cancels
    every choice's engine request. A failed choice fails the whole response (a 500 body, or an
    error event ending the stream) and cancels the others.

    Args:
        streams: Each choice's engine stream, in choice order.
        stats: The app's counters.
        stream: For SSE, the opening bytes (after every choice answered); ``None``: one JSON body.
        render: The SSE bytes for one event of one choice.
        fold: The JSON body of every choice's finished events (in choice order).
        end: For SSE, the closing bytes once every choice is done (before ``[DONE]``).
    """

    def __init__(
        self,
        streams: Sequence[AsyncIterator[Event]],
        stats: ServerStats,
        *,
        stream: Callable[[], list[bytes]] | None,
        render: Renderer,
        fold: Callable[[list[list[Event]]], dict[str, Any]],
        end: Callable[[], list[bytes]] = list,
    ) -> None:
        super().__init__()
        self._choices, self._stats = Choices(streams), stats
        self._start, self._render, self._fold, self._end = stream, render, fold, end

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
            await self._choices.aclose()

    async def _pump(self, send: Send) -> None:
        try:
            await self._choices.start()
        except Exception as error:
            await self._fail(api_error(error), send)
            return
        if self._start is None:
            await self._whole(send)
        else:
            await self._streamed(self._start, send)

    async def _whole(self, send: Send) -> None:
        choices: list[list[Event]] = [[] for _ in range(len(self._choices))]
        try:
            async for index, event in self._choices:
                if _failed(event):
                    message = _failure(event)
                    error = ApiError(500, message, "server_error", "generation_failed")
                    await self._fail(error, send)
                    return
                if not isinstance(event, PrefillProgress):
                    choices[index].append(event)
        except Exception as error:
            await self._fail(api_error(error), send)
            return
        self._stats.served += 1
        await JSONResponse(self._fold(choices))(self._scope, self._receive, send)

    async def _fail(self, error: ApiError, send: Send) -> None:
        self._stats.failed += 1
        await error.response()(self._scope, self._receive, send)

    async def _streamed(self, start: Callable[[], list[bytes]], send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        failed = False
        try:
            await _send_body(send, start())
            async for index, event in self._choices:
                if _failed(event):
                    failed = True
                    body = error_body(_failure(event), "server_error", "generation_failed")
                    await _send_body(send, [oa.sse(body)])
                    break
                if isinstance(event, PrefillProgress):
                    # An SSE comment: clients ignore it, and it keeps a long prefill from
                    # running into their read timeout (as mlx_lm.server does).
                    progress = f": prefill {event.processed}/{event.total}\n\n"
                    await _send_body(send, [progress.encode()])
                    continue
                await _send_body(send, self._render(index, event))
            else:
                await _send_body(send, self._end())
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


def _failed(event: Event) -> bool:
    return isinstance(event, Done) and event.finish_reason == "error"


def _failure(event: Event) -> str:
    return (event.error if isinstance(event, Done) else None) or "generation failed"


async def _send_body(send: Send, parts: list[bytes]) -> None:
    if parts:
        await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
