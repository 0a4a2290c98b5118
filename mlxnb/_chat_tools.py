"""The tool half of a chat turn: the user's approval, running the calls, and mending history.

:mod:`mlxnb._chat` runs the rounds; after a round that ends in tool calls it hands them here.
Each call may first wait for the user's approval (``approve=`` on the conversation); a denied
call never runs and the model reads that the user denied it. Plain ``def`` tools run in a
thread of their own (:mod:`mlxnb._tool_run`), so Stop ends the turn at once.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlxnb._tool_run import in_thread
from mlxnb._tools import Tool, ToolResult, execute_tool
from mlxnb.errors import WrongTypeError
from mlxnb.events import ToolCall

Approver = Callable[[ToolCall], bool | Awaitable[bool]]
"""Decides whether a tool call may run: ``True`` runs it, ``False`` denies it."""

Approve = bool | Approver
"""``approve=``: ``False`` (run every call), ``True`` (ask the user), or an :data:`Approver`."""

DENIED = "the user denied this call; the tool did not run"
"""The error of a denied call's result (the model reads ``Error: …`` with it)."""


@dataclass(frozen=True)
class ToolApproval:
    """A tool call waits for the user's approval before it runs (``approve=`` only).

    :meth:`Conversation.stream <mlxnb.Conversation.stream>` yields it just before it asks;
    the call's :class:`~mlxnb.ToolResult` follows (its error says so when it was denied).

    Attributes:
        call: The call waiting.
    """

    call: ToolCall
    type: Literal["tool_approval"] = field(default="tool_approval", init=False)


def approver_for(approve: Approve | None) -> Approver | None:
    """The approver a conversation uses: none, the console prompt, or the caller's function.

    Raises:
        WrongTypeError: ``approve`` is neither a bool nor a callable.
    """
    if approve is None or approve is False:
        return None
    if approve is True:
        return ask_in_console
    if callable(approve):
        return approve
    raise WrongTypeError(
        f"approve must be True, False or a function of the tool call, not {type(approve).__name__}"
    )


async def ask_in_console(call: ToolCall) -> bool:
    """Ask on standard input whether the call may run (``y``/``yes`` runs it).

    ``input()`` waits in a thread of its own, so the event loop (and Stop) stay free.
    """
    arguments = json.dumps(call.arguments, ensure_ascii=False, default=str)
    prompt = f"Run tool {call.name}({arguments})? [y/N] "
    answer = await in_thread(lambda: input(prompt), "mlxnb-approval")
    return answer.strip().lower() in ("y", "yes")


def denied(call: ToolCall) -> ToolResult:
    """The result of a call the user denied."""
    return ToolResult(call.id, call.name, dict(call.arguments), "", DENIED)


async def run_calls(
    tools: Mapping[str, Tool], calls: Sequence[ToolCall], approver: Approver | None
) -> AsyncGenerator[ToolApproval | ToolResult, None]:
    """Run a round's calls in order; with an approver each known tool waits for its verdict.

    Yields:
        A :class:`ToolApproval` before each call that waits, then each call's result.
    """
    for call in calls:
        if approver is not None and call.name in tools:
            yield ToolApproval(call)
            verdict = approver(call)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                yield denied(call)
                continue
        yield await execute_tool(tools, call)


def unanswered(
    calls: Sequence[ToolCall], results: Sequence[ToolResult], reason: str
) -> list[dict[str, Any]]:
    """``tool`` messages for the calls without a result (the turn was cut short).

    Every call of an assistant message needs its tool message, or the next request's history
    is malformed; a call that never ran (or whose late result was dropped) says why.
    """
    answered = {r.call_id for r in results}
    return [
        ToolResult(call.id, call.name, dict(call.arguments), "", reason).to_message()
        for call in calls
        if call.id not in answered
    ]
