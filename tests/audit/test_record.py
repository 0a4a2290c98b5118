from __future__ import annotations

import dataclasses
import json
import math
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from audit_helpers import BASE_TIME, MakeRecord, MakeTurn

from mlxnb._audit import SCHEMA_VERSION, TurnRecord
from mlxnb._audit.record import COLUMN_NAMES, COLUMNS, format_time, parse_time
from mlxnb._ids import new_request_id
from mlxnb.events import ToolCall, ToolCallError, Usage


def test_record_fields_are_the_schema_columns() -> None:
    assert tuple(f.name for f in dataclasses.fields(TurnRecord)) == COLUMN_NAMES
    assert len(set(COLUMN_NAMES)) == len(COLUMNS)


@pytest.mark.parametrize(
    ("finish_reason", "status"),
    [
        ("stop", "ok"),
        ("length", "ok"),
        ("tool_calls", "ok"),
        ("cancelled", "cancelled"),
        ("error", "error"),
    ],
)
def test_status_follows_finish_reason(
    make_turn: MakeTurn, make_record: MakeRecord, finish_reason: str, status: str
) -> None:
    record = make_record(make_turn(finish_reason=finish_reason))
    assert record.status == status
    assert record.finish_reason == finish_reason


def test_from_turn_copies_usage_texts_and_metadata(
    make_turn: MakeTurn, make_record: MakeRecord
) -> None:
    calls = (
        ToolCall(0, "c0", "add", {"a": 1, "b": [2, 3]}),
        ToolCall(1, "c1", "greet", {"name": "Zoë"}),
    )
    errors = (ToolCallError(2, "<tool_call>{bad", "invalid JSON"),)
    usage = Usage(30, 7, 4, 0.2, 150.0, 35.5, 2.5)
    turn = make_turn(
        "the answer",
        "the thinking",
        "tool_calls",
        tool_calls=calls,
        tool_call_errors=errors,
        usage=usage,
    )
    record = make_record(
        turn,
        source="server",
        model="m1",
        duration_s=1.5,
        conversation_id="c-1",
        endpoint="/v1/chat/completions",
        client="10.0.0.2:5555",
        run_id="r-1",
    )
    assert (record.content, record.reasoning) == ("the answer", "the thinking")
    assert json.loads(record.tool_calls) == [
        {"name": "add", "arguments": {"a": 1, "b": [2, 3]}},
        {"name": "greet", "arguments": {"name": "Zoë"}},
    ]
    assert record.tool_call_errors == 1
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (30, 7, 4)
    assert record.time_to_first_token_s == 0.2
    assert (record.prompt_tps, record.generation_tps, record.peak_memory_gb) == (150.0, 35.5, 2.5)
    assert (record.source, record.model, record.duration_s) == ("server", "m1", 1.5)
    assert (record.conversation_id, record.endpoint, record.client, record.run_id) == (
        "c-1",
        "/v1/chat/completions",
        "10.0.0.2:5555",
        "r-1",
    )
    assert record.error_type is None and record.error_message is None
    assert record.schema_version == SCHEMA_VERSION


def test_error_turn_keeps_message_and_type(make_turn: MakeTurn, make_record: MakeRecord) -> None:
    record = make_record(
        make_turn("", finish_reason="error", error="worker died"), error_type="GenerationError"
    )
    assert (record.status, record.error_message, record.error_type) == (
        "error",
        "worker died",
        "GenerationError",
    )


def test_started_at_must_be_aware_and_is_stored_as_utc(make_record: MakeRecord) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_record(started_at=datetime(2025, 1, 1, 12))
    plus_two = timezone(timedelta(hours=2))
    record = make_record(started_at=datetime(2025, 1, 1, 14, 30, tzinfo=plus_two))
    assert record.started_at == datetime(2025, 1, 1, 12, 30, tzinfo=timezone.utc)
    assert record.started_at.utcoffset() == timedelta(0)


def test_absent_values_have_one_spelling(make_turn: MakeTurn, make_record: MakeRecord) -> None:
    usage = Usage(1, 1, 0, float("nan"), None, float("nan"), None)
    record = make_record(make_turn(usage=usage, error=""), conversation_id="", client="")
    assert record.conversation_id is None and record.client is None
    assert record.error_message is None
    assert record.time_to_first_token_s is None and record.generation_tps is None


def test_invalid_status_is_rejected() -> None:
    with pytest.raises(ValueError, match="status"):
        TurnRecord(
            request_id="x",
            started_at=BASE_TIME,
            source="python",
            model="m",
            status="fine",  # type: ignore[arg-type]
            finish_reason="stop",
            duration_s=1.0,
        )


def test_row_round_trip(make_turn: MakeTurn, make_record: MakeRecord) -> None:
    record = make_record(make_turn("x", "y", tool_calls=(ToolCall(0, "c", "f", {}),)))
    assert TurnRecord.from_row(record.to_row()) == record


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 1, 1, tzinfo=timezone.utc),
        datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc),
        datetime(2030, 6, 1, 8, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7))),
    ],
)
def test_time_text_is_fixed_width_and_reversible(moment: datetime) -> None:
    text = format_time(moment)
    assert len(text) == len("2025-01-01T00:00:00.000000Z") and text.endswith("Z")
    assert parse_time(text) == moment


def test_request_ids_are_uuid7_unique_and_sorted_by_creation() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # strictly increasing within a process, even within one ms
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    millis = int(ids[-1].replace("-", "")[:12], 16)
    now_ms = datetime.now(timezone.utc).timestamp() * 1000
    assert math.isclose(millis, now_ms, abs_tol=60_000)


def test_request_ids_from_threads_are_unique() -> None:
    found: list[list[str]] = [[] for _ in range(4)]

    def work(slot: list[str]) -> None:
        slot.extend(new_request_id() for _ in range(5000))

    threads = [threading.Thread(target=work, args=(slot,)) for slot in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for slot in found for i in slot]
    assert len(set(everything)) == len(everything) == 20_000
    assert all(slot == sorted(slot) for slot in found)
