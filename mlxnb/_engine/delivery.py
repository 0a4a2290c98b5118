"""Delivery: how events travel from the worker thread back to each caller.

An async caller gets them on its own event loop (:class:`AsyncSink`), a blocking caller through
a thread-safe queue (:class:`SyncSink`); the worker batches one step's items per loop
(:class:`Outbox`), and the :class:`Notifier` hands them over, at most once per interval.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from mlxnb.events import Done, Event

Item = list[Event] | BaseException
"""What a sink carries: one step's events, or the error that ended the request."""


class AsyncSink:
    """Delivers events to a consumer on an asyncio loop (thread-safe on the producing side)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        #: Set when the consumer takes an item (the producing :class:`Outbox` watches it); not
        #: when its loop is handed one: a starved loop may run that hand-over and then wait
        #: again for the GIL before the consumer's task runs.
        self.taken: threading.Event | None = None

    def put(self, item: Item) -> bool:
        """Hand ``item`` to the consumer's loop; ``False`` when that loop is gone."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            return False
        return True

    async def get(self) -> Item:
        """Wait for the next item."""
        item = await self.queue.get()
        mark_taken(self.taken)
        return item


class SyncSink:
    """Delivers events to a blocking consumer thread.

    The :class:`Notifier` treats it as a loop of its own (:attr:`loop`) whose hand-over runs
    at once, so a blocking consumer is woken as an async one is: at most once per interval,
    not once per token.
    """

    #: Whether a consumer takes what is put here (the :class:`Outbox` waits for no one else).
    tracked = True

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        #: Set when the consumer takes an item (the producing :class:`Outbox` watches it).
        self.taken: threading.Event | None = None

    @property
    def loop(self) -> SyncSink:
        """What the notifier wakes: the sink itself."""
        return self

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback`` now, on the notifier's thread: its hand-over only fills the queue."""
        callback(*args)

    def put(self, item: Item) -> bool:
        """Hand ``item`` to the consumer at once."""
        self.queue.put(item)
        return True

    def get(self, timeout: float | None = None) -> Item:
        """Wait for the next item (``queue.Empty`` after ``timeout``)."""
        item = self.queue.get(timeout=timeout)
        mark_taken(self.taken)
        return item


def mark_taken(taken: threading.Event | None) -> None:
    """Tell the producing :class:`Outbox` that a consumer took something.

    Checked first: setting an event takes its lock and wakes its waiters, a cost the consumer
    would pay for every item while the mark is still up from the last one.
    """
    if taken is not None and not taken.is_set():
        taken.set()


class Loop(Protocol):
    """What the notifier wakes: an asyncio loop, or a :class:`SyncSink` standing for one."""

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any:
        """Run ``callback(*args)`` on the consumer's side, soon."""


_Queued = tuple[AsyncSink | SyncSink, threading.Event, Item]

WAKE_INTERVAL = 0.033
"""Seconds the notifier waits after waking loops before it wakes them again (see Notifier):
about one frame of a 30 Hz display, faster than the widget sends (every 40 ms). Against 16 ms it
halves a fast stream's wake-ups, and with them a third of the consumer's and notifier's CPU
(bench/FINDINGS.md, twelfth session)."""
STARVED_AFTER = 0.012
"""Least seconds a delivery may wait untaken before the worker yields the GIL to consumers
(Outbox)."""
STARVED_INTERVALS = 2
"""Notifier intervals a delivery may wait untaken before its consumer counts as starved: it may
wait one interval in the notifier anyway, and then for its loop's turn."""
YIELD_AT_MOST = 0.002
"""Seconds the worker waits, once starved consumers are seen, for one of them to take."""
PATIENCE_LIMIT = 1.0
"""Most seconds between two such waits while no consumer takes anything (a busy loop)."""


Batches = dict[Loop, list[_Queued]]


class Outbox:
    """Collects one generation step's items and hands them over in one wake-up per loop.

    With many streams on one event loop (a server, an evaluation run), one
    ``call_soon_threadsafe`` per stream per token would wake that loop N times a step and
    contend for the GIL with the worker; one batch per loop per step wakes it once. The
    wake-up itself is made by the :class:`Notifier` thread, not the worker.
    """

    def __init__(
        self, notifier: Notifier | None = None, yield_at_most: float = YIELD_AT_MOST
    ) -> None:
        self._by_loop: Batches = {}
        self._urgent = False
        self._notifier = notifier or shared_notifier()
        self._taken = threading.Event()
        self._sent = False
        self._pending_since: float | None = None
        # A notifier that wakes consumers less often holds their items longer: against a fixed
        # STARVED_AFTER every consumer of a slow one would look starved at every delivery.
        self._starved_after = max(STARVED_AFTER, STARVED_INTERVALS * self._notifier.interval)
        self._patience = self._starved_after
        self._yield_at_most = yield_at_most
        #: Times the worker yielded to starved consumers, and how many of those timed out.
        self.yields = self.yield_timeouts = 0

    def put(self, sink: AsyncSink | SyncSink, cancel: threading.Event, item: Item) -> None:
        """Queue ``item`` for a consumer (a sink no one reads gets it at once).

        Args:
            sink: The consumer's sink.
            cancel: Set when the consumer's loop is gone, so its request stops.
            item: Events or an error.
        """
        first = sink.taken is None
        sink.taken = self._taken
        if isinstance(sink, SyncSink) and not sink.tracked:
            sink.put(item)
            return
        self._by_loop.setdefault(sink.loop, []).append((sink, cancel, item))
        # A request's first item and its end are not held for the interval: the time to its
        # first token, and to its answer, owe nothing to how often consumers are woken.
        self._urgent = self._urgent or first or ends_request(item)
        self._sent = True

    def flush(self) -> None:
        """Send what was queued; consumers whose loop is gone are cancelled.

        Then, if what was sent earlier has waited untaken too long, wait (briefly, without the
        GIL) for a consumer to take it: see :meth:`_yield_to_starved`.
        """
        # Read before this step's items go out: a consumer quick enough to take them before
        # the check below would otherwise be counted against the items it has not seen yet.
        taken = self._taken.is_set()
        if taken:
            self._taken.clear()
        if self._by_loop:
            batches, self._by_loop = self._by_loop, {}
            urgent, self._urgent = self._urgent, False
            self._notifier.send(batches, urgent=urgent)
        self._yield_to_starved(taken)

    def _yield_to_starved(self, taken: bool) -> None:
        """Let consumers that cannot get the GIL take their items.

        A thread waiting for the GIL is only handed it when the holder keeps it past the switch
        interval. A worker that lets go of the GIL only for a moment at each step takes it back
        before a waiting thread wakes, so with fast steps (~0.4 ms) the notifier and the
        consumers' threads may wait for the whole answer (reproduced on the CPU; what looked like
        it on the H200 was text the detokenizer held, see the README). So when nothing has been
        taken for two notifier intervals (at least ``STARVED_AFTER``) since items were sent,
        the worker hurries the notifier and waits until something is taken, for at most
        ``yield_at_most``. A consumer that is merely busy (its loop running a cell) makes the
        wait time out: the next one then comes twice as late, up to ``PATIENCE_LIMIT``, so it
        costs the worker next to nothing.

        Args:
            taken: Whether a consumer took something since the last flush.
        """
        sent, self._sent = self._sent, False
        if taken:
            self._patience = self._starved_after
            self._pending_since = time.monotonic() if sent else None
            return
        if self._pending_since is None:
            if sent:
                self._pending_since = time.monotonic()
            return
        if time.monotonic() - self._pending_since < self._patience:
            return
        self.yields += 1
        # The notifier may be sleeping out its interval: the wait is only of use if it wakes
        # the consumers within it.
        self._notifier.hurry()
        if self._taken.wait(self._yield_at_most):  # left set: the next flush counts the take
            self._patience = self._starved_after
        else:
            self.yield_timeouts += 1
            self._patience = min(2 * self._patience, PATIENCE_LIMIT)
        self._pending_since = time.monotonic()


class Notifier:
    """Wakes consumers' event loops from a thread of its own, at most once per interval.

    Waking a loop (``call_soon_threadsafe``) writes to its self-pipe, which releases the GIL;
    the woken loop then holds it while it runs, and a worker that woke it would wait for the
    GIL before it can launch the next step (measured at several hundred microseconds per token
    on two cores). Handing the batch to this thread costs the worker no GIL hand-off: the
    notifier runs when the worker releases the GIL anyway, while it waits for the device.

    When tokens come faster than one per ``interval`` (a small model on a fast device), waking
    the loop for each would still make three threads take the GIL in turn every token while
    the worker is busy launching steps; so a batch that comes within the interval of the last
    wake-up waits out the rest of it, and from then on the notifier sleeps out the interval
    after each wake-up and wakes each loop once for everything that came meanwhile. A slower
    stream is woken per token, and the notifier then waits for its next batch on the queue
    instead: sleeping out an interval after each of its tokens woke this thread once more per
    token for nothing, in the middle of the next step (on two cores at ~45 ms a token that
    cost a tenth of the stream's speed, ``cpu-overhead-mid-*.json``). A request's first batch,
    and the one that ends it (its ``Done`` or error), are sent at once. Batches for one loop
    keep their order.

    Args:
        interval: Least seconds between two wake-ups (``0``: wake for every batch).
    """

    def __init__(self, interval: float = WAKE_INTERVAL) -> None:
        self._queue: queue.SimpleQueue[Batches] = queue.SimpleQueue()
        self._urgent = threading.Event()
        #: Least seconds between two wake-ups.
        self.interval = interval
        self._lock = threading.Lock()
        #: The thread that wakes the loops (``None`` until the first :meth:`send`).
        self.thread: threading.Thread | None = None

    def send(self, batches: Batches, urgent: bool = False) -> None:
        """Queue one step's batches for delivery (from any thread; never blocks).

        Args:
            batches: The step's items by loop.
            urgent: Wake the loops now, even within the interval (a request started or ended).
        """
        if self.thread is None:
            self._start()
        self._queue.put(batches)
        if urgent:
            self._urgent.set()

    def hurry(self) -> None:
        """Wake the loops for what is queued now, even within the interval."""
        self._urgent.set()

    def _start(self) -> None:
        with self._lock:
            if self.thread is None:
                # Touches no MLX, so a daemon thread may end with the interpreter.
                thread = threading.Thread(target=self._run, name="mlxnb-notifier", daemon=True)
                thread.start()
                self.thread = thread

    def _run(self) -> None:
        woke = -math.inf  # when the loops were last woken
        while True:
            batches: Batches | None = self._queue.get()  # idle: a step's batches wake it
            early = self.interval - (time.monotonic() - woke)
            if early > 0:  # a fast stream: its batches wait out the interval
                self._sleep(early)
            while True:
                # Cleared before the take, so an end sent after it is not missed.
                self._urgent.clear()
                merged = self._merge({}, batches)
                if not merged:
                    break  # nothing came during the interval: idle again
                self._wake(merged)
                woke, batches = time.monotonic(), None
                if early <= 0:
                    break  # a slow stream: its next batch wakes this thread on the queue
                # The interval is slept out before anything more is taken, on the event and
                # not the queue: a fast stream's steps then queue without waking this thread
                # (a put that nobody waits for wakes no one), so the worker pays no wake-up
                # and this thread takes the GIL once per interval, not twice.
                self._sleep(self.interval)

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or until a batch is urgent or the loops are hurried."""
        self._urgent.wait(seconds)

    def _merge(self, merged: Batches, batches: Batches | None) -> Batches:
        """Add ``batches`` and whatever else is queued now to ``merged``."""
        while True:
            if batches is not None:
                for loop, items in batches.items():
                    merged.setdefault(loop, []).extend(items)
            try:
                batches = self._queue.get_nowait()
            except queue.Empty:
                return merged

    @staticmethod
    def _wake(merged: Batches) -> None:
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
    for sink, item in merged_by_sink(items):
        sink.queue.put_nowait(item)


def merged_by_sink(items: list[_Queued]) -> list[tuple[AsyncSink | SyncSink, Item]]:
    """One wake-up's items, each sink's consecutive event lists joined into one, in order.

    A fast stream's consumer then takes one item per wake-up instead of one per step; an
    error stays an item of its own (nothing follows it: it ends its request).
    """
    merged: list[tuple[AsyncSink | SyncSink, Item]] = []
    last: dict[AsyncSink | SyncSink, list[Event]] = {}
    for sink, _, item in items:
        events = last.get(sink)
        if events is not None and isinstance(item, list):
            events.extend(item)
            continue
        if isinstance(item, list):
            item = last[sink] = list(item)
        else:
            last.pop(sink, None)
        merged.append((sink, item))
    return merged


def ends_request(item: Item) -> bool:
    """Whether ``item`` ends its request (an error, or events ending with ``Done``)."""
    return isinstance(item, BaseException) or (bool(item) and isinstance(item[-1], Done))


def unpack(item: Item) -> tuple[list[Event], bool]:
    """One delivered item as ``(events, finished)``; an error item is raised here."""
    if isinstance(item, BaseException):
        raise item
    return item, ends_request(item)
