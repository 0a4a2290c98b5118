"""How the cell magic shows an answer: thinking in a collapsible block, the answer as markdown.

Two outputs in the cell, each updated in place through an IPython display handle: the thinking
as HTML (a ``<details>`` block, open while the model thinks, closed to *Thought for N s* once it
answers; the model's text is escaped, since HTML that the kernel sends is not sanitised) and the
answer as ``text/markdown`` (rendered and sanitised by the front end). Updates are coalesced to
at most one per :data:`FLUSH_INTERVAL_S` (jupyter_server drops IOPub messages above 1000/s),
plus one when the thinking ends and one at the end.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable

from mlxnb.events import ContentDelta, Event, ThinkingDelta, Turn

FLUSH_INTERVAL_S = 0.08
"""Shortest time between two updates of the cell's output while an answer streams."""

RESEND_CHARS_PER_S = 200_000
"""Each update re-sends and re-renders the whole text: a long answer updates less often."""

Bundle = dict[str, str]
"""A MIME bundle: MIME type → data."""

Update = Callable[[Bundle], None]
"""Replaces what one output shows."""

Show = Callable[[Bundle], Update]
"""Adds an output to the cell and returns how to update it."""


def show_in_cell(bundle: Bundle) -> Update:
    """Display ``bundle`` as a new output of the running cell; the result updates it in place."""
    from IPython.display import display

    handle = display(bundle, raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def update(new: Bundle) -> None:
        if handle is not None:
            handle.update(new, raw=True)

    return update


def thinking_bundle(text: str, seconds: float | None) -> Bundle:
    """The thinking as an HTML ``<details>`` block (escaped) with a plain-text twin.

    Args:
        text: The reasoning so far.
        seconds: How long the model thought, once it has finished (``None``: still thinking;
            the block is open).
    """
    summary = "Thinking…" if seconds is None else f"Thought for {seconds:.1f} s"
    opened = " open" if seconds is None else ""
    body = html.escape(text.strip("\n"), quote=True)
    markup = (
        f'<details class="mlxnb-thinking"{opened}><summary>{summary}</summary>'
        f'<div style="white-space: pre-wrap; opacity: 0.75">{body}</div></details>'
    )
    return {"text/html": markup, "text/plain": f"{summary}\n{text.strip()}"}


def fenced(text: str, info: str = "") -> str:
    """``text`` as a markdown code block whose fence is longer than any backtick run in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def ending_note(turn: Turn) -> str:
    """A line under the answer when it did not end normally (``""`` when it did)."""
    if turn.finish_reason == "cancelled":
        return "*Stopped.*"
    if turn.finish_reason == "length":
        return "*Cut off at `max_tokens`.*"
    if turn.finish_reason == "error":
        return "**Error:**\n\n" + fenced(turn.error or "unknown error", "text")
    return ""


def answer_bundle(content: str, *, json_answer: bool = False, note: str = "") -> Bundle:
    """The answer as markdown (a JSON answer in a code block) with a plain-text twin.

    Args:
        content: The answer so far.
        json_answer: Show it as a JSON code block (a typed answer, ``--json``).
        note: A line to put under it (see :func:`ending_note`).
    """
    markdown = fenced(content, "json") if json_answer and content else content
    plain = content
    if note:
        markdown = f"{markdown}\n\n{note}" if markdown else note
        plain = f"{plain}\n\n{note}" if plain else note
    return {"text/markdown": markdown, "text/plain": plain}


class CellView:
    """One answer streamed into the running cell's output.

    Feed it every event with :meth:`add`, then call :meth:`finish` with the turn.

    Args:
        json_answer: The answer is JSON (shown in a code block).
        show: Adds an output to the cell (default: IPython's display, with a display id).
        clock: Seconds, monotonic.
        interval: Shortest time between two updates while streaming.
    """

    def __init__(
        self,
        *,
        json_answer: bool = False,
        show: Show = show_in_cell,
        clock: Callable[[], float] = time.monotonic,
        interval: float = FLUSH_INTERVAL_S,
    ) -> None:
        self._json = json_answer
        self._show = show
        self._clock = clock
        self._interval = interval
        self._thinking: list[str] = []
        self._content: list[str] = []
        self._thought_from: float | None = None
        self._thought_for: float | None = None
        self._note = ""
        self._thinking_out: Update | None = None
        self._answer_out: Update | None = None
        self._shown: dict[str, Bundle] = {}
        self._flushed_at = -float("inf")
        self._chars = 0

    def add(self, event: Event) -> None:
        """Take one event; update the cell if the last update is old enough."""
        now = self._clock()
        if isinstance(event, ThinkingDelta):
            if self._thought_from is None or self._thought_for is not None:
                self._thought_from, self._thought_for = now, None  # (again) thinking
            self._thinking.append(event.text)
        elif isinstance(event, ContentDelta):
            self._content.append(event.text)
            if self._stop_thinking(now):
                self._flush(now)  # the thinking block closes at once
                return
        else:
            return
        self._chars += len(event.text)
        if now - self._flushed_at >= max(self._interval, self._chars / RESEND_CHARS_PER_S):
            self._flush(now)

    def finish(self, turn: Turn) -> None:
        """Show the final state: everything received, the thinking closed, how it ended."""
        now = self._clock()
        self._stop_thinking(now)
        self._note = ending_note(turn)
        if not self._content and not self._note and not self._thinking:
            self._note = "*(no answer)*"
        self._flush(now, final=True)

    def _stop_thinking(self, now: float) -> bool:
        if self._thought_from is None or self._thought_for is not None:
            return False
        self._thought_for = now - self._thought_from
        return True

    def _flush(self, now: float, final: bool = False) -> None:
        self._flushed_at = now
        if self._thinking:
            bundle = thinking_bundle("".join(self._thinking), self._thought_for)
            self._thinking_out = self._put("thinking", self._thinking_out, bundle)
        if self._content or final:
            bundle = answer_bundle("".join(self._content), json_answer=self._json, note=self._note)
            self._answer_out = self._put("answer", self._answer_out, bundle)

    def _put(self, pane: str, output: Update | None, bundle: Bundle) -> Update:
        if output is None:
            output = self._show(bundle)
        elif self._shown.get(pane) != bundle:
            output(bundle)
        self._shown[pane] = bundle
        return output
