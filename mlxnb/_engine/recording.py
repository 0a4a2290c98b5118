"""Recording a finished turn: the one place every door's turn becomes an audit row.

The worker calls :func:`record_turn` when a request ends (done, cancelled or failed), so a
turn is recorded when its stream ends, whether or not anyone is still reading it. Requests the
engine refuses before they reach the worker are recorded by the engine the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from mlxnb._audit import AuditLog, TurnRecord
from mlxnb._engine.request import UNCHECKED_OPTIONS, Request, effective_settings
from mlxnb.events import Done, TurnBuilder, Usage

log = logging.getLogger("mlxnb")


def asked(request: Request) -> dict[str, Any]:
    """What the request asked, as its audit row keeps it for replay (images as placeholders)."""
    prompt = request.prompt
    return {
        "messages": [dict(message) for message in request.messages],
        "tools": list(request.tools) if request.tools else None,
        "enable_thinking": request.enable_thinking,
        "chat_template_kwargs": dict(request.template_kwargs or {}) or None,
        "prompt": prompt if prompt is None or isinstance(prompt, str) else list(prompt),
    }


def ran_with(request: Request) -> dict[str, Any]:
    """The settings the request ran with, its response format's name among them."""
    settings = effective_settings(request.options)
    if request.schema_name is not None:
        settings["response_format"] = request.schema_name
    return settings


def record_turn(
    audit: AuditLog | None,
    request: Request,
    model_id: str,
    builder: TurnBuilder,
    duration_s: float,
    error: BaseException | None,
) -> None:
    """Append one audit row for a finished turn; never raises into generation.

    Args:
        audit: An :class:`~mlxnb.AuditLog`, or ``None`` to record nothing.
        request: The request that ended (who asked, its id and start time).
        model_id: The model that answered.
        builder: The turn's folded events.
        duration_s: Seconds from submission to the end.
        error: The error that ended the turn, if any.
    """
    if audit is None:
        return
    meta = request.meta
    try:
        record = TurnRecord.from_turn(
            builder.build(),
            request_id=request.request_id,
            source=meta.source,
            model=model_id,
            started_at=request.started_at,
            duration_s=duration_s,
            conversation_id=meta.conversation_id,
            endpoint=meta.endpoint,
            client=meta.client,
            run_id=meta.run_id,
            error_type=type(error).__name__ if error is not None else None,
            images=[image.summary() for image in request.images],
            sampling=None if request.options is UNCHECKED_OPTIONS else ran_with(request),
            request=asked(request),
        )
        audit.append(record)
    except Exception:  # an audit failure must not take generation down; it is logged
        log.exception("mlxnb: could not write the audit row for %s", request.request_id)


def failed_turn(error: BaseException) -> TurnBuilder:
    """The folded events of a request that failed before producing any: one error ``Done``."""
    builder = TurnBuilder()
    builder.add(Done("error", Usage(), str(error)))
    return builder
