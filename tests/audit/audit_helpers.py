"""Builders shared by the audit tests: turns, records and a varied set of records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from mlxnb._audit import TurnRecord
from mlxnb._ids import new_request_id
from mlxnb.events import FinishReason, ToolCall, ToolCallError, Turn, Usage

BASE_TIME = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)

MakeTurn = Callable[..., Turn]
MakeRecord = Callable[..., TurnRecord]


def build_turn(
    content: str = "Hello there.",
    reasoning: str = "",
    finish_reason: FinishReason = "stop",
    *,
    tool_calls: tuple[ToolCall, ...] = (),
    tool_call_errors: tuple[ToolCallError, ...] = (),
    error: str | None = None,
    usage: Usage | None = None,
) -> Turn:
    return Turn(
        content=content,
        reasoning=reasoning,
        tool_calls=tool_calls,
        tool_call_errors=tool_call_errors,
        finish_reason=finish_reason,
        usage=usage or Usage(12, 5, 2, 0.125, 96.0, 40.5, 1.25),
        error=error,
    )


def build_record(
    turn: Turn | None = None,
    *,
    source: str = "python",
    model: str = "tiny",
    started_at: datetime = BASE_TIME,
    duration_s: float = 0.75,
    **extra: Any,
) -> TurnRecord:
    return TurnRecord.from_turn(
        turn or build_turn(),
        request_id=extra.pop("request_id", None) or new_request_id(),
        source=source,
        model=model,
        started_at=started_at,
        duration_s=duration_s,
        **extra,
    )


def varied_records(count: int = 12) -> list[TurnRecord]:
    """Records that differ in every dimension the filters and summary look at."""
    records = []
    for i in range(count):
        finish: FinishReason = ("stop", "length", "cancelled", "error")[i % 4]
        calls = (ToolCall(0, f"call_{i}", "lookup", {"q": f"item {i}", "n": i}),) if i % 3 else ()
        turn = build_turn(
            content=f"answer {i}",
            reasoning=f"thought {i}" if i % 2 else "",
            finish_reason=finish,
            tool_calls=calls,
            error="boom" if finish == "error" else None,
            usage=Usage(10 + i, 2 * i, i % 3, 0.1 * (i + 1), 100.0 + i, 20.0 + i, None),
        )
        records.append(
            build_record(
                turn,
                source=("widget", "python", "eval", "server")[i % 4],
                model=("alpha", "beta")[i % 2],
                started_at=BASE_TIME + timedelta(minutes=i),
                duration_s=0.5 * (i + 1),
                conversation_id=f"conv-{i // 3}",
                endpoint="/v1/chat/completions" if i % 4 == 3 else None,
                client="127.0.0.1:5000" if i % 4 == 3 else None,
                run_id="run-7" if i % 4 == 2 else None,
                error_type="GenerationError" if finish == "error" else None,
            )
        )
    return records
