"""What of a turn is stored: long text cut with a marker, content withheld on request.

A user or a model controls the text columns, so they may be arbitrarily long; and a log can be
asked to keep metadata only (``log_content=False``: content and reasoning blanked, tool-call
arguments withheld, names kept, the request not stored). Image summaries (hashes, formats,
sizes) are metadata: kept with ``log_content=False``, and like tool calls cut whole, never
mid-JSON, to fit the cap.
"""

from __future__ import annotations

import json
import operator
from typing import Any

from mlxnb._audit.record import COLUMN_NAMES, COLUMNS, OMITTED, TurnRecord, split_omitted

_CAPPED = tuple(
    i for i, c in enumerate(COLUMNS) if c.kind in ("str", "str?") and c.name != "request_id"
)
_capped = operator.itemgetter(*_CAPPED)
_TOOL_CALLS = COLUMN_NAMES.index("tool_calls")
_IMAGES = COLUMN_NAMES.index("images")
_SAMPLING = COLUMN_NAMES.index("sampling")
_REQUEST = COLUMN_NAMES.index("request")
_BLANKED = (COLUMN_NAMES.index("content"), COLUMN_NAMES.index("reasoning"))


def _truncate(text: str, cap: int) -> str:
    marker = f"…[truncated, {len(text)} chars]"
    return (text[: max(cap - len(marker), 0)] + marker)[:cap]


def _tool_names(text: str, cap: int) -> str:
    """Tool calls JSON with arguments withheld (null), dropping calls from the end to fit."""
    try:
        calls = json.loads(text)
        names = [{"name": str(call["name"]), "arguments": None} for call in calls]
    except (ValueError, TypeError, KeyError):
        return "[]"
    out = json.dumps(names, ensure_ascii=False)
    while len(out) > cap and names:
        names.pop()
        out = json.dumps(names, ensure_ascii=False)
    return out


def _image_summaries(text: str, cap: int) -> str | None:
    """Image summaries JSON cut to fit: summaries dropped from the end, ``{"omitted": n}`` last.

    The list still accounts for every image (kept plus omitted equals ``image_count``); when not
    even the marker fits, the summaries are dropped (``None``) and only the count remains.
    """
    try:
        entries = json.loads(text)
    except ValueError:
        return None
    if not isinstance(entries, list):
        return None
    kept, omitted = split_omitted(entries)

    def dumped() -> str:
        return json.dumps([*kept, {OMITTED: omitted}] if omitted else kept, ensure_ascii=False)

    out = dumped()
    while len(out) > cap and kept:
        kept.pop()
        omitted += 1
        out = dumped()
    return out if len(out) <= cap else None


def stored_row(record: TurnRecord, log_content: bool, cap: int) -> tuple[Any, ...]:
    """The row to store for ``record``.

    Args:
        record: The finished turn.
        log_content: Keep content, reasoning and tool-call arguments.
        cap: Most characters per text field.
    """
    row = record.to_row()
    # Fast path, all in C: no text field is long and content is kept.
    if log_content and max(map(len, filter(None, _capped(row))), default=0) <= cap:
        return row
    values = list(row)
    if not log_content:
        for i in _BLANKED:
            values[i] = ""
        values[_TOOL_CALLS] = _tool_names(values[_TOOL_CALLS], cap)
        values[_REQUEST] = None  # the messages are content
    for i in _CAPPED:
        text = values[i]
        if text is not None and len(text) > cap:
            if i == _TOOL_CALLS:
                values[i] = _tool_names(text, cap)
            elif i == _IMAGES:
                values[i] = _image_summaries(text, cap)
            elif i in (_SAMPLING, _REQUEST):
                values[i] = None  # cut JSON would not parse: none rather than a broken value
            else:
                values[i] = _truncate(text, cap)
    return tuple(values)
