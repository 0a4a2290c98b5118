"""A blocking iterator over an async event stream, for the engine's ``stream_sync`` twin.

The stream runs on a private event loop in a helper thread (a Jupyter cell already has a
running loop); events come back through a queue. Closing the iterator (``break``, an
interrupt) cancels the stream's task, which closes its HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

from mlxnb.events import Event

_END = object()


def iterate_sync(
    make: Callable[[], AsyncGenerator[Event, None]], name: str = "mlxnb-remote"
) -> Iterator[Event]:
    """Run the stream ``make()`` on a private loop and yield its events here, blocking.

    Args:
        make: Builds the async generator (called on the helper thread's loop).
        name: The helper thread's name.

    Yields:
        The stream's events, in order; its exception, if any, is raised here.
    """
    items: queue.Queue[Any] = queue.Queue()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def pump() -> None:
        state["task"] = asyncio.current_task()
        state["loop"] = asyncio.get_running_loop()
        ready.set()
        events = make()
        try:
            async for event in events:
                items.put(event)
        except BaseException as error:  # handed to the consumer (cancellation included)
            items.put(error)
        finally:
            await events.aclose()
            items.put(_END)

    thread = threading.Thread(target=asyncio.run, args=(pump(),), name=name, daemon=True)
    thread.start()
    ready.wait()
    try:
        while (item := items.get()) is not _END:
            if isinstance(item, asyncio.CancelledError):
                continue  # we cancelled it: the consumer has gone
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # its loop closed just now
                state["loop"].call_soon_threadsafe(state["task"].cancel)
        thread.join()
