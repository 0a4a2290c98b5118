from __future__ import annotations

import dataclasses
import json
import math
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from audit_helpers import BASE_TIME, NEW_COLUMNS, MakeRecord, MakeTurn, image_summaries

from mlxnb._audit import SCHEMA_VERSION, TurnRecord
from mlxnb._audit.record import COLUMN_NAMES, COLUMNS, Column, format_time, parse_time
from mlxnb._ids import new_request_id
from mlxnb.errors import AuditError
from mlxnb.events import ToolCall, ToolCallError, Usage


def test_record_fields_are_the_schema_columns() -> None:
    assert tuple(f.name for f in dataclasses.fields(TurnRecord)) == COLUMN_NAMES
    assert len(set(COLUMN_NAMES)) == len(COLUMNS)


def test_later_columns_are_at_the_end_with_their_versions() -> None:
    assert SCHEMA_VERSION == 6
    later = ("image_count", "images", "sampling", "draft_tokens", "accepted_draft_tokens")
    assert COLUMN_NAMES[-6:] == NEW_COLUMNS == (*later, "request")
    assert [(c.kind, c.since, c.default) for c in COLUMNS[-6:]] == [
        ("int", 2, 0),
        ("str?", 2, None),
        ("str?", 3, None),
        ("int", 4, 0),
        ("int", 4, 0),
        ("str?", 5, None),
    ]
    dtypes = ["Int64", "string", "string", "Int64", "Int64", "string"]
    assert [c.dtype for c in COLUMNS[-6:]] == dtypes
    assert COLUMNS[-6].sql == "image_count INTEGER NOT NULL DEFAULT 0"
    assert COLUMNS[-5].sql == "images TEXT"
    assert COLUMNS[-4].sql == "sampling TEXT"
    assert COLUMNS[-2].sql == "accepted_draft_tokens INTEGER NOT NULL DEFAULT 0"
    assert COLUMNS[-1].sql == "request TEXT"
    assert all(c.since == 1 for c in COLUMNS[:-6])


def test_sampling_is_stored_as_sorted_json(make_record: MakeRecord) -> None:
    record = make_record(sampling={"top_p": 0.9, "temperature": 0.6, "seed": None})
    assert record.sampling == '{"seed": null, "temperature": 0.6, "top_p": 0.9}'
    assert make_record().sampling is None
    with pytest.raises(AuditError, match="JSON"):
        make_record(sampling={"temperature": float("nan")})


def test_a_later_column_that_is_not_nullable_needs_a_default() -> None:
    with pytest.raises(AuditError, match="default"):
        Column("later", "int", since=3)
    assert Column("quoted", "str", since=3, default="it's").sql.endswith("DEFAULT 'it''s'")


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


def test_from_turn_keeps_image_summaries_in_order(make_record: MakeRecord) -> None:
    summaries = image_summaries(2)
    record = make_record(images=summaries)
    assert record.image_count == 2
    assert record.images is not None
    assert json.loads(record.images) == summaries
    assert [image["sha256"] for image in json.loads(record.images)] == [
        summaries[0]["sha256"],
        summaries[1]["sha256"],
    ]
    assert TurnRecord.from_row(record.to_row()) == record
    assert record.to_row()[-6:] == (2, record.images, None, 0, 0, None)


def test_from_turn_without_images_has_none(make_record: MakeRecord) -> None:
    for record in (make_record(), make_record(images=()), make_record(images=[])):
        assert (record.image_count, record.images) == (0, None)
        assert record.to_row()[-6:] == (0, None, None, 0, 0, None)


def test_from_turn_accepts_any_sequence_of_mappings(make_record: MakeRecord) -> None:
    summaries = tuple(image_summaries(3))
    record = make_record(images=summaries)
    assert record.image_count == 3 and json.loads(record.images or "") == list(summaries)


@pytest.mark.parametrize(
    "images",
    [
        {"sha256": "ab", "format": "PNG", "width": 1, "height": 1, "bytes": 1},  # one, unlisted
        "sha256",
        [{"sha256": "ab"}, "not a mapping"],
        [{"sha256": "ab", "bytes": b"\x89PNG"}],  # never the bytes: not even serialisable
    ],
    ids=["mapping", "text", "not-mappings", "raw-bytes"],
)
def test_from_turn_refuses_images_that_are_not_summaries(
    make_record: MakeRecord, images: Any
) -> None:
    with pytest.raises(AuditError, match="summar"):
        make_record(images=images)


def _with_images(image_count: int, images: str | None) -> TurnRecord:
    return TurnRecord(
        request_id="x",
        started_at=BASE_TIME,
        source="python",
        model="m",
        status="ok",
        finish_reason="stop",
        duration_s=1.0,
        image_count=image_count,
        images=images,
    )


@pytest.mark.parametrize(
    ("image_count", "images", "message"),
    [
        (-1, None, "image_count must be >= 0"),
        (1, json.dumps(image_summaries(2)), "image_count is 1 but images accounts for 2"),
        (3, json.dumps(image_summaries(2)), "image_count is 3 but images accounts for 2"),
        (1, "[]", "image_count is 1 but images accounts for 0"),
        (0, json.dumps(image_summaries(1)), "image_count is 0 but images accounts for 1"),
        (2, '[{"sha256": "ab"}, {"omitted": 2}]', "image_count is 2 but images accounts for 3"),
        (1, '{"sha256": "ab"}', "JSON list of objects"),
        (1, '["ab"]', "JSON list of objects"),
        (1, '[{"sha256": "ab"', "JSON list of objects"),
    ],
    ids=[
        "negative",
        "fewer-counted",
        "more-counted",
        "empty-list",
        "zero-counted",
        "omitted-marker",
        "not-a-list",
        "not-objects",
        "cut-json",
    ],
)
def test_image_count_must_match_the_summaries(
    image_count: int, images: str | None, message: str
) -> None:
    with pytest.raises(AuditError, match=message) as caught:
        _with_images(image_count, images)
    assert isinstance(caught.value, ValueError)


def test_image_columns_have_one_spelling_of_none() -> None:
    assert _with_images(0, "").images is None
    assert _with_images(0, "[]").images is None
    assert _with_images(4, None).images is None  # the summaries did not fit: the count stays
    capped = '[{"sha256": "ab"}, {"omitted": 2}]'
    assert _with_images(3, capped).images == capped
    assert _with_images(3, '[{"omitted": 3}]').image_count == 3


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
