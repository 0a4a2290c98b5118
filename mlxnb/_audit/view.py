"""Notebook views of audit rows: text and HTML tables of the last rows, and a live widget.

Everything here renders plain data handed in by :class:`~mlxnb._audit.log.AuditLog` (a header
line, a frame of the last rows, a subscribe function); it never reaches back into the log.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from mlxnb.errors import DependencyError

SHOWN = (
    "started_at",
    "source",
    "model",
    "status",
    "duration_s",
    "time_to_first_token_s",
    "completion_tokens",
    "generation_tps",
    "content",
)
PREVIEW_CHARS = 60


def totals_line(where: str, totals: Mapping[str, int]) -> str:
    """One line naming the log and its totals."""
    return (
        f"AuditLog({where}): {totals['turns']} turns, {totals['errors']} errors, "
        f"{totals['cancelled']} cancelled, {totals['prompt_tokens']} prompt + "
        f"{totals['completion_tokens']} completion tokens"
    )


def closed_line(where: str) -> str:
    """The line shown for a closed log."""
    return f"AuditLog({where}, closed)"


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    content = frame["content"].str.replace(r"\s+", " ", regex=True)
    preview = content.where(
        content.str.len() <= PREVIEW_CHARS, content.str.slice(0, PREVIEW_CHARS - 1) + "…"
    )
    shown: pd.DataFrame = frame.loc[:, list(SHOWN)].assign(content=preview)
    return shown


def as_text(header: str, rows: pd.DataFrame | None) -> str:
    """The header, then ``rows`` (if any) as a text table."""
    if rows is None or rows.empty:
        return header
    return header + "\n" + _shown(rows).to_string(index=False, na_rep="-")


def as_html(header: str, rows: pd.DataFrame | None) -> str:
    """The header and ``rows`` as HTML; every cell is escaped (model output)."""
    top = f"<p><b>{html.escape(header)}</b></p>"
    if rows is None or rows.empty:
        return top
    return top + _shown(rows).to_html(index=False, escape=True, na_rep="-", border=0)


Subscribe = Callable[[Callable[[Any], None]], Callable[[], None]]


def live(
    render: Callable[[], str],
    subscribe: Subscribe,
    is_closed: Callable[[], bool],
    interval: float = 0.5,
) -> Any:
    """An ``ipywidgets.HTML`` showing ``render()`` again after each appended row.

    Refreshes are coalesced: at most one per ``interval`` seconds, on a timer thread.

    Args:
        render: Produces the HTML to show.
        subscribe: Registers a per-row listener and returns its unsubscribe function.
        is_closed: Whether the source was closed (the widget then stops listening).
        interval: Least seconds between refreshes.

    Raises:
        DependencyError: ipywidgets is not installed.
    """
    try:
        import ipywidgets
    except ImportError as exc:
        raise DependencyError("AuditLog.live() needs ipywidgets: pip install ipywidgets") from exc

    widget = ipywidgets.HTML(value=render())
    lock = threading.Lock()
    pending: list[threading.Timer] = []

    def refresh() -> None:
        with lock:
            pending.clear()
        if is_closed() or getattr(widget, "comm", True) is None:
            unsubscribe()
            return
        widget.value = render()

    def on_append(_row: Any) -> None:
        with lock:
            if pending:
                return
            timer = threading.Timer(interval, refresh)
            timer.daemon = True
            pending.append(timer)
        timer.start()

    unsubscribe = subscribe(on_append)
    return widget
