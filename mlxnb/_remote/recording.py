"""One audit row per remote turn: who asked, which endpoint answered, what came back.

The row names the endpoint by its base URL with any user information removed (never the API
key, which travels only in a header) and the model by its remote name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlxnb._audit import AuditLog, TurnRecord
from mlxnb._ids import new_request_id
from mlxnb._remote.wire import SETTINGS
from mlxnb.events import TurnBuilder

log = logging.getLogger("mlxnb")


def public_url(url: str) -> str:
    """``url`` without user information (``http://user:secret@host`` → ``http://host``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def record_remote_turn(
    audit: AuditLog | None,
    *,
    meta: Any,
    model: str,
    endpoint: str,
    body: Mapping[str, Any] | None,
    request: Mapping[str, Any],
    builder: TurnBuilder,
    started_at: datetime,
    duration_s: float,
    error: BaseException | None,
) -> None:
    """Append the audit row of one remote turn; never raises into the caller.

    Args:
        audit: The log, or ``None`` to record nothing.
        meta: The door's ``RequestMeta`` (source, conversation and run ids), or ``None``.
        model: The remote model's name.
        endpoint: The endpoint's public URL.
        body: The request body sent (its sampling fields are kept), ``None`` if refused.
        request: What was asked: messages, tools, ``enable_thinking``.
        builder: The turn's folded events (a ``Done`` included).
        started_at: When the request started (timezone-aware).
        duration_s: Seconds until the stream ended.
        error: The error that ended the turn, if any.
    """
    if audit is None:
        return
    try:
        sampling = {k: body[k] for k in SETTINGS if body is not None and k in body}
        record = TurnRecord.from_turn(
            builder.build(),
            request_id=getattr(meta, "request_id", None) or new_request_id(),
            source=getattr(meta, "source", None) or "python",
            model=model,
            started_at=started_at,
            duration_s=duration_s,
            conversation_id=getattr(meta, "conversation_id", None),
            endpoint=endpoint,
            run_id=getattr(meta, "run_id", None),
            error_type=type(error).__name__ if error is not None else None,
            sampling=sampling or None,
            request=dict(request),
        )
        audit.append(record)
    except Exception:  # an audit failure must not fail the turn; it is logged
        log.exception("mlxnb: could not write the audit row of a turn from %s", endpoint)


def asked(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    enable_thinking: bool | None,
) -> dict[str, Any]:
    """What a request asked, as its audit row keeps it."""
    return {
        "messages": [_without_images(message) for message in messages],
        "tools": [dict(tool) for tool in tools] if tools else None,
        "enable_thinking": enable_thinking,
    }


def _without_images(message: Mapping[str, Any]) -> dict[str, Any]:
    """The message with each image part as a placeholder (pixels are never stored)."""
    kept = dict(message)
    content = kept.get("content")
    if isinstance(content, list):
        kept["content"] = [
            {"type": "image"}
            if isinstance(part, Mapping) and part.get("type") in ("image", "image_url")
            else part
            for part in content
        ]
    return kept
