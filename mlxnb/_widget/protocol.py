"""The chat widget's stream protocol: events → ops, the ops reducer, and the batcher.

The recorder turns events into ops, the reducer folds ops into a transcript turn, and the
batcher coalesces ops into few comm messages. A transcript turn is ``{"id", "user", "images",
"parts", "status", "error", "stats"}`` plus ``"model"`` (the model that answered) and, after a
``left_out`` op, ``"left_out"`` (earlier messages the request left out to fit the context);
``images`` holds small JPEG thumbnails (``data:`` URLs) of the images sent with the user's
message, never the images themselves, so a saved notebook stays small. A message with
``@name`` mentions also carries ``"context"``: what each mention inserted (``mentions.py``). No
op changes ``images``, ``model`` or ``context``: the ``start`` message announces them with the
turn.

``widgets/src/protocol.js`` implements the same reducer for the page; both are tested against
``widgets/tests/fixtures/protocol.json`` so the live view and the saved transcript agree.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from mlxnb._chat import ChatEvent, ChatTurn, ContextTrimmed, RoundStart, ToolApproval
from mlxnb._tools import ToolResult
from mlxnb.events import (
    ContentDelta,
    Done,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallError,
)

Op = list[Any]
"""One op, e.g. ``["text", "Hello"]`` or ``["tool_call", key, id, name, arguments]``."""


def _tool_part(parts: list[dict[str, Any]], key: str) -> dict[str, Any]:
    for part in parts:
        if part["kind"] == "tool" and part["key"] == key:
            return part
    part = {
        "kind": "tool",
        "key": key,
        "id": None,
        "name": None,
        "arguments": None,
        "raw": "",
        "status": "streaming",
        "result": None,
        "error": None,
    }
    parts.append(part)
    return part


def apply_op(turn: dict[str, Any], op: Sequence[Any]) -> None:
    """Fold one op into a transcript turn, exactly as ``applyOp`` in ``protocol.js`` does."""
    parts: list[dict[str, Any]] = turn["parts"]
    last = parts[-1] if parts else None
    kind = op[0]
    if kind == "think":
        if last is not None and last["kind"] == "thinking" and last["seconds"] is None:
            last["text"] += op[1]
        else:
            parts.append({"kind": "thinking", "text": op[1], "seconds": None})
    elif kind == "think_end":
        for part in reversed(parts):
            if part["kind"] == "thinking" and part["seconds"] is None:
                part["seconds"] = op[1]
                break
    elif kind == "text":
        if last is not None and last["kind"] == "content":
            last["text"] += op[1]
        else:
            parts.append({"kind": "content", "text": op[1]})
    elif kind == "tool_delta":
        _tool_part(parts, op[1])["raw"] += op[2]
    elif kind == "tool_call":
        part = _tool_part(parts, op[1])
        part.update(id=op[2], name=op[3], arguments=op[4], status="running")
    elif kind == "tool_error":
        part = _tool_part(parts, op[1])
        if op[2]:
            part["raw"] = op[2]
        part.update(status="error", error=op[3])
    elif kind == "tool_result":
        part = _tool_part(parts, op[1])
        part.update(result=op[2], error=op[3], status="error" if op[3] else "done")
    elif kind == "tool_status":
        _tool_part(parts, op[1])["status"] = op[2]
    elif kind == "tool_output":
        _tool_part(parts, op[1])["output"] = op[2]
    elif kind == "left_out":
        turn["left_out"] = op[1]
    elif kind == "end":
        turn.update(status=op[1], error=op[2], stats=op[3])


_TEXT_OPS = {"think": 1, "text": 1, "tool_delta": 2}


class Batcher:
    """Coalesces ops into few messages so a fast stream never meets the IOPub rate limit.

    A batch goes out when ``interval`` has passed since the last one (a timer makes sure the
    tail is never held longer), when ``max_chars`` of text wait and ``min_gap`` has passed, when
    the stream moves to another pane (thinking → answer → tool call), and on :meth:`flush`.

    Args:
        send: Called with each batch of ops.
        interval: Seconds between batches while tokens stream.
        max_chars: Buffered characters that justify an early batch.
        min_gap: Shortest time between two batches sent for size.
        clock: Time source (tests pass a fake).
    """

    def __init__(
        self,
        send: Callable[[list[Op]], None],
        *,
        interval: float = 0.04,
        max_chars: int = 256,
        min_gap: float = 1 / 28,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._send = send
        self._interval = interval
        self._max_chars = max_chars
        self._min_gap = min_gap
        self._clock = clock
        self._ops: list[Op] = []
        self._pane: object = None
        self._chars = 0
        self._last = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self.messages = 0

    def add(self, op: Op) -> None:
        """Queue one op; sends a batch when the rules above say so."""
        pane = self._pane_of(op)
        if self._ops and pane != self._pane:
            self.flush()
        self._pane = pane
        text_at = _TEXT_OPS.get(op[0])
        previous = self._ops[-1] if self._ops else None
        if text_at is not None and previous is not None and previous[:text_at] == op[:text_at]:
            previous[text_at] += op[text_at]
        else:
            self._ops.append(list(op))
        if text_at is not None:
            self._chars += len(op[text_at])
        since = self._clock() - self._last
        if since >= self._interval or (since >= self._min_gap and self._chars >= self._max_chars):
            self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval - since, self.flush)

    @staticmethod
    def _pane_of(op: Op) -> object:
        if op[0] in ("think", "think_end"):
            return "thinking"
        if op[0] == "text":
            return "content"
        if op[0].startswith("tool_"):
            return ("tool", op[1])
        return op[0]

    def flush(self) -> None:
        """Send what is queued now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        self._chars = 0
        self._last = self._clock()
        self.messages += 1
        self._send(ops)


class OpRecorder:
    """Turns a conversation's events into ops (for the page) and the transcript entry.

    Args:
        turn_id: The entry's id.
        user: The user's message.
        batcher: Where ops go.
        clock: Time source for the thinking timer.
        images: Thumbnails (``data:`` URLs) of the images sent with the message.
        model: The name of the model that answers (the page labels the answer with it).
        context: What the message's ``@name`` mentions inserted (``mentions.py``), if any.
        parts: The parts of an answer being continued (its entry goes on from them).
    """

    def __init__(
        self,
        turn_id: str,
        user: str,
        batcher: Batcher,
        clock: Callable[[], float] = time.perf_counter,
        *,
        images: Sequence[str] = (),
        model: str | None = None,
        context: Sequence[dict[str, Any]] = (),
        parts: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.turn: dict[str, Any] = {
            "id": turn_id,
            "user": user,
            "images": list(images),
            "parts": copy.deepcopy(list(parts)),
            "status": "streaming",
            "error": None,
            "stats": None,
        }
        if model is not None:
            self.turn["model"] = model
        if context:
            self.turn["context"] = copy.deepcopy(list(context))
        self._batcher = batcher
        self._clock = clock
        self._round = 0
        self._keys: dict[str, str] = {}
        self._think_start: float | None = None
        # Seconds a continued answer had thought before it was cut while thinking (``None``:
        # no thought reopened). The engine carries such a thought on, so its pane stays open
        # for the new text and its time adds to the old.
        self._thought_before: float | None = None
        seeded = self.turn["parts"]
        if seeded and seeded[-1]["kind"] == "thinking":
            self._thought_before = float(seeded[-1]["seconds"] or 0.0)
            seeded[-1]["seconds"] = None

    def _op(self, *op: Any) -> None:
        apply_op(self.turn, op)
        self._batcher.add(list(op))

    def _end_thinking(self) -> None:
        before, self._thought_before = self._thought_before, None
        if self._think_start is not None:
            thought = (before or 0.0) + self._clock() - self._think_start
            self._op("think_end", round(thought, 2))
            self._think_start = None
        elif before is not None:  # a reopened thought that got no more text closes as it was
            self._op("think_end", round(before, 2))

    def add(self, event: ChatEvent) -> None:
        """Record one event."""
        if isinstance(event, RoundStart):
            self._round = event.round
            return
        if isinstance(event, ContextTrimmed):
            self._op("left_out", event.left_out)
            return
        if isinstance(event, ThinkingDelta):
            if self._think_start is None:
                self._think_start = self._clock()
            self._op("think", event.text)
            return
        self._end_thinking()
        key = f"{self._round}-{getattr(event, 'index', 0)}"
        if isinstance(event, ContentDelta):
            self._op("text", event.text)
        elif isinstance(event, ToolCallDelta):
            self._op("tool_delta", key, event.text)
        elif isinstance(event, ToolCall):
            self._keys[event.id] = key
            self._op("tool_call", key, event.id, event.name, event.arguments)
        elif isinstance(event, ToolCallError):
            self._op("tool_error", key, event.raw, event.message)
        elif isinstance(event, ToolApproval):
            self.tool_status(event.call.id, "pending")
        elif isinstance(event, ToolResult):
            key = self._keys.get(event.call_id, event.call_id)
            if event.stdout or event.display:
                self._op("tool_output", key, {"stdout": event.stdout, **(event.display or {})})
            self._op("tool_result", key, event.content, event.error)
        elif isinstance(event, Done | ChatTurn):
            pass

    def tool_status(self, call_id: str, status: str) -> None:
        """A tool call waits for approval (``pending``) or runs (``running``)."""
        self._op("tool_status", self._keys.get(call_id, call_id), status)
        self._batcher.flush()  # the page shows Run / Deny now, not at the next tick

    def finish(
        self, turn: ChatTurn | None, failure: str | None = None, context_limit: int | None = None
    ) -> dict[str, Any]:
        """End the entry (status, error, statistics), send everything, return the entry.

        ``context_limit``: the model's context length, shown beside how much of it the
        conversation fills (``None``: unknown, not shown).
        """
        self._end_thinking()
        for part in self.turn["parts"]:  # calls Stop left waiting or running never answer
            if part["kind"] == "tool" and part["status"] in ("pending", "running"):
                self._op("tool_result", part["key"], "", "cancelled")
        if turn is None:
            self._op("end", "error", failure or "generation failed", None)
        else:
            status = {"cancelled": "cancelled", "error": "error"}.get(turn.finish_reason, "done")
            self._op("end", status, turn.error, {**turn.stats(), "context_limit": context_limit})
        self._batcher.flush()
        return copy.deepcopy(self.turn)
