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


Batches = dict[asyncio.AbstractEventLoop, list[_Queued]]


class Outbox:
    """Collects one generation step's items and hands them over in one wake-up per loop.

    With many streams on one event loop (a server, an evaluation run), one
    ``call_soon_threadsafe`` per stream per token would wake that loop N times a step and
    contend for the GIL with the worker; one batch per loop per step wakes it once. The
    wake-up itself is made by the :class:`Notifier` thread, not the worker.
    """

    def __init__(self, notifier: Notifier | None = None) -> None:
        self._by_loop: Batches = {}
        self._notifier = notifier or shared_notifier()

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
        if self._by_loop:
            batches, self._by_loop = self._by_loop, {}
            self._notifier.send(batches)


class Notifier:
    """Wakes consumers' event loops from a thread of its own.

    Waking a loop (``call_soon_threadsafe``) writes to its self-pipe, which releases the GIL;
    the woken loop then holds it while it runs, and a worker that woke it would wait for the
    GIL before it can launch the next step (measured at several hundred microseconds per token
    on two cores). Handing the batch to this thread costs the worker no GIL hand-off: the
    notifier runs when the worker releases the GIL anyway, while it waits for the device.
    Batches for one loop keep their order; several pending ones merge into one wake-up.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Batches] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()

    def send(self, batches: Batches) -> None:
        """Queue one step's batches for delivery (from any thread; never blocks)."""
        if not self._started:
            self._start()
        self._queue.put(batches)

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                # Touches no MLX, so a daemon thread may end with the interpreter.
                threading.Thread(target=self._run, name="mlxnb-notifier", daemon=True).start()
                self._started = True

    def _run(self) -> None:
        while True:
            merged: Batches = {}
            batches: Batches | None = self._queue.get()
            while batches is not None:
                for loop, items in batches.items():
                    merged.setdefault(loop, []).extend(items)
                try:
                    batches = self._queue.get_nowait()
                except queue.Empty:
                    batches = None
            for loop, items in merged.items():
                try:
                    loop.call_soon_threadsafe(_hand_over, items)
                except RuntimeError:
                    for _, cancel, _ in items:
                        cancel.set()


_notifier: Notifier | None = None
_notifier_lock = threading.Lock()


def shared_notifier() -> Notifier:
    """The process's notifier (one thread wakes every loop for every engine)."""
    global _notifier
    with _notifier_lock:
        if _notifier is None:
            _notifier = Notifier()
        return _notifier


def _hand_over(items: list[_Queued]) -> None:
    for sink, _, item in items:
        sink.queue.put_nowait(item)


def unpack(item: Item) -> tuple[list[Event], bool]:
    """One delivered item as ``(events, finished)``; an error item is raised here."""
    if isinstance(item, BaseException):
        raise item
    return item, bool(item) and isinstance(item[-1], Done)
