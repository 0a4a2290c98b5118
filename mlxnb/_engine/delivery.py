"""Delivery: how events travel from the worker thread back to each caller.

An async caller gets them on its own event loop (:class:`AsyncSink`), a blocking caller through
a thread-safe queue (:class:`SyncSink`); the worker batches one step's items per loop
(:class:`Outbox`).
"""

from __future__ import annotations

import asyncio
import queue
import threading

from mlxnb.events import Done, Event

Item = list[Event] | BaseException
"""What a sink carries: one step's events, or the error that ended the request."""


class AsyncSink:
    """Delivers events to a consumer on an asyncio loop (thread-safe on the producing side)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue()

    def put(self, item: Item) -> bool:
        """Hand ``item`` to the consumer's loop; ``False`` when that loop is gone."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            return False
        return True

    async def get(self) -> Item:
        """Wait for the next item."""
        return await self.queue.get()


class SyncSink:
    """Delivers events to a blocking consumer thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()

    def put(self, item: Item) -> bool:
        """Hand ``item`` to the consumer."""
        self._queue.put(item)
        return True

    def get(self, timeout: float | None = None) -> Item:
        """Wait for the next item (``queue.Empty`` after ``timeout``)."""
        return self._queue.get(timeout=timeout)


_Queued = tuple[AsyncSink, threading.Event, Item]


class Outbox:
    """Collects one generation step's items and hands them over in one wake-up per loop.

    With many streams on one event loop (a server, an evaluation run), one
    ``call_soon_threadsafe`` per stream per token would wake that loop N times a step and
    contend for the GIL with the worker; one batch per loop per step wakes it once.
    """

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[_Queued]] = {}

    def put(self, sink: AsyncSink | SyncSink, cancel: threading.Event, item: Item) -> None:
        """Queue ``item`` for a consumer (blocking consumers get it at once).

        Args:
            sink: The consumer's sink.
            cancel: Set when the consumer's loop is gone, so its request stops.
            item: Events or an error.
        """
        if isinstance(sink, AsyncSink):
            self._by_loop.setdefault(sink.loop, []).append((sink, cancel, item))
        else:
            sink.put(item)

    def flush(self) -> None:
        """Send what was queued; consumers whose loop is gone are cancelled."""
        batches, self._by_loop = self._by_loop, {}
        for loop, items in batches.items():
            try:
                loop.call_soon_threadsafe(_hand_over, items)
            except RuntimeError:
                for _, cancel, _ in items:
                    cancel.set()


def _hand_over(items: list[_Queued]) -> None:
    for sink, _, item in items:
        sink.queue.put_nowait(item)


def unpack(item: Item) -> tuple[list[Event], bool]:
    """One delivered item as ``(events, finished)``; an error item is raised here."""
    if isinstance(item, BaseException):
        raise item
    return item, bool(item) and isinstance(item[-1], Done)
