"""The page's say over a turn: Run / Deny on tool calls, Continue, and edit-and-resend checks.

:class:`PageApprovals` is the conversation's approver when a widget is made with
``approve=True``: each call waits until the page answers (or Stop cancels the wait).
:func:`continued_entry` and :func:`edit_index` check a request before a turn starts, so a
refusal comes at once and the transcript is only cut for a request that will run.

The page's messages may be handled on another thread than the loop a turn runs on (JupyterLab
sends comm messages through a kernel subshell when it can): :func:`on_loop` hands a callback
to the turn's loop and wakes it, so Stop and Run / Deny act at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from mlxnb._chat import ChatTurn
from mlxnb.errors import InvalidRequestError
from mlxnb.events import ToolCall


class PageApprovals:
    """Tool calls waiting for the page's Run or Deny, by call id.

    Args:
        running: Called with a call's id once it is allowed to run (the pane says so).
    """

    def __init__(self, running: Callable[[str], None]) -> None:
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._running = running

    @property
    def waiting(self) -> tuple[str, ...]:
        """The ids of the calls waiting now."""
        return tuple(self._waiting)

    async def __call__(self, call: ToolCall) -> bool:
        """Wait for the page's answer about ``call`` (the conversation's approver)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = future
        try:
            allowed = await future
        finally:
            self._waiting.pop(call.id, None)
        if allowed:
            self._running(call.id)
        return allowed

    def answer(self, call_id: str, run: bool) -> None:
        """Run (``True``) or deny (``False``) the waiting call ``call_id``.

        Raises:
            InvalidRequestError: No call with that id is waiting (already answered, or stopped).
        """
        future = self._waiting.get(call_id)
        if future is None or future.done():
            raise InvalidRequestError(f"no tool call {call_id!r} is waiting for approval")

        def settle() -> None:
            if not future.done():
                future.set_result(run)

        on_loop(future.get_loop(), settle)


def on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop``: now when called there, else soon, waking the loop."""
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        callback()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(callback)


def continued_entry(
    turns: Sequence[ChatTurn], transcript: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The transcript entry a Continue carries on: the last one, if ``max_tokens`` cut it.

    Raises:
        InvalidRequestError: The last answer did not stop at ``max_tokens``.
    """
    if not turns or not transcript or turns[-1].finish_reason != "length":
        raise InvalidRequestError("only an answer cut short by max_tokens can be continued")
    return transcript[-1]


def edit_index(turns: Sequence[ChatTurn], index: Any) -> int:
    """The turn an edit starts from, checked (0 for the first; negative counts from the end).

    Raises:
        InvalidRequestError: No such turn.
    """
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidRequestError(f"the turn to edit must be a number, not {index!r}")
    if not -len(turns) <= index < len(turns):
        raise InvalidRequestError(f"there is no turn {index} to edit ({len(turns)})")
    return index % len(turns)
