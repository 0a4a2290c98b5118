"""Recording a finished turn: the one place every door's turn becomes an audit row.

The worker calls :func:`record_turn` when a request ends (done, cancelled or failed), so a
turn is recorded when its stream ends, whether or not anyone is still reading it. Requests the
engine refuses before they reach the worker are recorded by the engine the same way, and so are
scoring calls (:func:`record_score`), which generate nothing but are asked of the model all the
same.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mlxnb._audit import AuditLog, TurnRecord
from mlxnb._engine.request import UNCHECKED_OPTIONS, Request, RequestMeta, effective_settings
from mlxnb._engine.scoring import Score
from mlxnb.events import ContentDelta, Done, TurnBuilder, Usage

SCORE_ENDPOINT = "score"
"""The ``endpoint`` of a scoring call's audit row (``engine.score``), unless its caller names
one."""

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
    _append(
        audit,
        builder,
        request.meta,
        model_id,
        request_id=request.request_id,
        started_at=request.started_at,
        duration_s=duration_s,
        error=error,
        images=[image.summary() for image in request.images],
        sampling=None if request.options is UNCHECKED_OPTIONS else ran_with(request),
        request=asked(request),
    )


def _append(
    audit: AuditLog | None,
    builder: TurnBuilder,
    meta: RequestMeta,
    model_id: str,
    *,
    request_id: str,
    started_at: datetime,
    duration_s: float,
    error: BaseException | None,
    **row: Any,
) -> None:
    """Append the row of one finished call; an audit failure is logged, never raised.

    ``row``: :meth:`TurnRecord.from_turn`'s other fields (``endpoint`` overrides the caller's).
    """
    if audit is None:
        return
    try:
        fields: dict[str, Any] = {"endpoint": meta.endpoint, **row}
        record = TurnRecord.from_turn(
            builder.build(),
            request_id=request_id,
            source=meta.source,
            model=model_id,
            started_at=started_at,
            duration_s=duration_s,
            conversation_id=meta.conversation_id,
            client=meta.client,
            run_id=meta.run_id,
            error_type=type(error).__name__ if error is not None else None,
            **fields,
        )
        audit.append(record)
    except Exception:  # an audit failure must not take the caller down; it is logged
        log.exception("mlxnb: could not write the audit row for %s", request_id)


def failed_turn(error: BaseException) -> TurnBuilder:
    """The folded events of a request that failed before producing any: one error ``Done``."""
    builder = TurnBuilder()
    builder.add(Done("error", Usage(), str(error)))
    return builder


@dataclasses.dataclass(frozen=True)
class ScoreCall:
    """One scoring call, as its audit row keeps it.

    Attributes:
        request_id: Its id.
        started_at: When it was asked (timezone-aware).
        context: The context as given (text or token ids).
        continuations: The continuations as given.
        tokens: Tokens the model read: the context once, and every continuation.
    """

    request_id: str
    started_at: datetime
    context: str | Sequence[int]
    continuations: Sequence[str | Sequence[int]]
    tokens: int = 0


def record_score(
    audit: AuditLog | None,
    meta: RequestMeta,
    model_id: str,
    call: ScoreCall,
    duration_s: float,
    scores: Sequence[Score] = (),
    error: BaseException | None = None,
) -> None:
    """Append the audit row of a scoring call; never raises into the caller.

    The row's ``content`` is the scores as JSON (one ``{"logprob", "tokens", "greedy"}`` per
    continuation, in order), its ``request`` the context and continuations, its
    ``prompt_tokens`` every token the model read; nothing is generated.
    """
    builder = TurnBuilder()
    usage = Usage(prompt_tokens=call.tokens)
    if error is None:
        answer = [dataclasses.asdict(score) for score in scores]
        builder.add(ContentDelta(json.dumps(answer)))
        builder.add(Done("stop", usage))
    else:
        builder.add(Done("error", usage, str(error)))

    def plain(value: str | Sequence[int]) -> str | list[int]:
        return value if isinstance(value, str) else [int(token) for token in value]

    _append(
        audit,
        builder,
        meta,
        model_id,
        request_id=call.request_id,
        started_at=call.started_at,
        duration_s=duration_s,
        error=error,
        endpoint=meta.endpoint or SCORE_ENDPOINT,
        request={
            "context": plain(call.context),
            "continuations": [plain(item) for item in call.continuations],
        },
    )
