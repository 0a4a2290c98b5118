"""Delivery: the notifier wakes each loop at most once per interval, and at once for an end."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mlxnb._engine.delivery import AsyncSink, Batches, Notifier, Outbox
from mlxnb.events import ContentDelta, Done, Usage

SETTLE = 10.0  # seconds a delivery that must come may take under load


class RecordingLoop:
    """A loop seam: records each wake-up (its time and the items) instead of running it."""

    def __init__(self, closed: bool = False) -> None:
        self.wakes: list[tuple[float, list[Any]]] = []
        self.closed = closed
        self.woken = threading.Condition()

    def call_soon_threadsafe(self, callback: Any, items: list[Any]) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        with self.woken:
            self.wakes.append((time.monotonic(), [item for _, _, item in items]))
            self.woken.notify_all()

    def wait_for(self, count: int) -> None:
        with self.woken:
            assert self.woken.wait_for(lambda: len(self.wakes) >= count, SETTLE), self.wakes


def token(text: str) -> list[Any]:
    return [ContentDelta(text)]


def ending() -> list[Any]:
    return [ContentDelta("."), Done(finish_reason="stop", usage=Usage(1, 1))]


def batch(loop: RecordingLoop, item: Any, cancel: threading.Event | None = None) -> Batches:
    sink = AsyncSink.__new__(AsyncSink)  # the loop seam stands in for a real one
    sink.loop = loop  # type: ignore[assignment]
    return {loop: [(sink, cancel or threading.Event(), item)]}  # type: ignore[dict-item]


@pytest.fixture
def loop() -> RecordingLoop:
    return RecordingLoop()


@pytest.fixture
def slow_notifier() -> Iterator[Notifier]:
    yield Notifier(interval=0.6)


def test_batches_within_the_interval_merge_into_one_later_wake_up_in_order(
    loop: RecordingLoop, slow_notifier: Notifier
) -> None:
    slow_notifier.send(batch(loop, token("a")))
    loop.wait_for(1)
    sent = time.monotonic()
    for text in "bcd":
        slow_notifier.send(batch(loop, token(text)))
    loop.wait_for(2)
    time.sleep(0.2)  # nothing else may follow
    assert [items for _, items in loop.wakes] == [
        [token("a")],
        [token("b"), token("c"), token("d")],
    ]
    assert loop.wakes[1][0] - loop.wakes[0][0] >= 0.6 - 0.05
    assert loop.wakes[1][0] >= sent


def test_a_request_s_end_is_sent_at_once_within_the_interval(loop: RecordingLoop) -> None:
    notifier = Notifier(interval=60.0)
    notifier.send(batch(loop, token("a")))
    loop.wait_for(1)
    notifier.send(batch(loop, token("b")))
    notifier.send(batch(loop, ending()), urgent=True)
    loop.wait_for(2)  # within SETTLE, not after the minute
    assert loop.wakes[1][1] == [token("b"), ending()]


def test_without_an_interval_each_batch_wakes_its_loop(loop: RecordingLoop) -> None:
    notifier = Notifier(interval=0.0)
    for count, text in enumerate("abc", start=1):
        notifier.send(batch(loop, token(text)))
        loop.wait_for(count)
    assert [items for _, items in loop.wakes] == [[token("a")], [token("b")], [token("c")]]


def test_a_consumer_whose_loop_is_gone_is_cancelled() -> None:
    gone = RecordingLoop(closed=True)
    cancel = threading.Event()
    Notifier(interval=0.0).send(batch(gone, token("a"), cancel))
    assert cancel.wait(SETTLE)


@pytest.mark.parametrize(("items", "urgent"), [([token("a")], False), ([ending()], True)])
def test_the_outbox_marks_a_step_that_ends_a_request_urgent(items: list[Any], urgent: bool) -> None:
    sent: list[tuple[Batches, bool]] = []

    class Recorder(Notifier):
        def send(self, batches: Batches, urgent: bool = False) -> None:
            sent.append((batches, urgent))

    outbox = Outbox(Recorder())

    async def put_all() -> None:
        sink = AsyncSink(asyncio.get_running_loop())
        for item in items:
            outbox.put(sink, threading.Event(), item)
        outbox.flush()
        outbox.flush()  # nothing queued: nothing sent

    asyncio.run(put_all())
    assert [flag for _, flag in sent] == [urgent]
