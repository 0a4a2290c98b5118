"""Notebook views of an audit log: text and HTML reprs (last rows and totals), a live widget."""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from mlxnb._audit import AuditLog
    from mlxnb._audit_record import TurnRecord

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


def _shown(log: AuditLog, rows: int) -> pd.DataFrame:
    frame = log.tail(rows)
    content = frame["content"].str.replace(r"\s+", " ", regex=True)
    preview = content.where(
        content.str.len() <= PREVIEW_CHARS, content.str.slice(0, PREVIEW_CHARS - 1) + "…"
    )
    shown: pd.DataFrame = frame.loc[:, list(SHOWN)].assign(content=preview)
    return shown


def _totals_line(log: AuditLog) -> str:
    totals = log.totals()
    where = str(log.path) if log.path is not None else "in memory"
    return (
        f"AuditLog({where}): {totals['turns']} turns, {totals['errors']} errors, "
        f"{totals['cancelled']} cancelled, {totals['prompt_tokens']} prompt + "
        f"{totals['completion_tokens']} completion tokens"
    )


def text_repr(log: AuditLog, rows: int = 5) -> str:
    """A header with the totals, then the last ``rows`` rows as a text table."""
    if log.closed:
        return f"AuditLog({log.path or 'in memory'}, closed)"
    header = _totals_line(log)
    if not len(log):
        return header
    return header + "\n" + _shown(log, rows).to_string(index=False, na_rep="-")


def html_repr(log: AuditLog, rows: int = 5) -> str:
    """The totals and the last ``rows`` rows as HTML; every cell is escaped (model output)."""
    if log.closed:
        return f"<pre>{html.escape(text_repr(log))}</pre>"
    header = f"<p><b>{html.escape(_totals_line(log))}</b></p>"
    if not len(log):
        return header
    table = _shown(log, rows).to_html(index=False, escape=True, na_rep="-", border=0)
    return header + table


def live(log: AuditLog, rows: int = 10, interval: float = 0.5) -> Any:
    """An ``ipywidgets.HTML`` view of ``log`` that refreshes as this kernel appends rows.

    Refreshes are coalesced: at most one per ``interval`` seconds, on a timer thread. Rows that
    other processes append show up with the next refresh.

    Raises:
        ImportError: ipywidgets is not installed.
    """
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError("AuditLog.live() needs ipywidgets: pip install ipywidgets") from exc

    widget = ipywidgets.HTML(value=html_repr(log, rows))
    lock = threading.Lock()
    pending: list[threading.Timer] = []

    def refresh() -> None:
        with lock:
            pending.clear()
        if log.closed or getattr(widget, "comm", True) is None:
            unsubscribe()
            return
        widget.value = html_repr(log, rows)

    def on_append(record: TurnRecord) -> None:
        with lock:
            if pending:
                return
            timer = threading.Timer(interval, refresh)
            timer.daemon = True
            pending.append(timer)
        timer.start()

    unsubscribe = log.subscribe(on_append)
    return widget
