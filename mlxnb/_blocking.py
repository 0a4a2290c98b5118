"""Running a coroutine to completion from blocking code, even inside a Jupyter cell."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(coroutine: Coroutine[Any, Any, T], name: str = "mlxnb-sync") -> T:
    """Run ``coroutine`` on a private event loop in its own thread and wait for it.

    A Jupyter cell already runs inside an event loop, so ``asyncio.run`` cannot be used there.
    Ctrl-C (or the kernel's interrupt) cancels the coroutine; the ``KeyboardInterrupt`` is
    re-raised once it has finished cleaning up.

    Args:
        coroutine: What to run.
        name: The thread's name.

    Returns:
        The coroutine's result.
    """
    state: dict[str, Any] = {}
    ready = threading.Event()

    def drive() -> None:
        loop = asyncio.new_event_loop()
        state["loop"] = loop
        state["task"] = loop.create_task(coroutine)
        ready.set()
        try:
            state["result"] = loop.run_until_complete(state["task"])
        except BaseException as error:  # re-raised in the caller's thread
            state["error"] = error
        finally:
            loop.close()

    thread = threading.Thread(target=drive, name=name, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        ready.wait()
        state["loop"].call_soon_threadsafe(state["task"].cancel)
        thread.join()
        raise
    if "error" in state:
        raise state["error"]
    result: T = state["result"]
    return result
