from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from audit_helpers import BASE_TIME, MakeRecord, MakeTurn, image_summaries

from mlxnb._audit import SCHEMA_VERSION, AuditLog, TurnRecord, default_path, read_export
from mlxnb._audit.record import COLUMN_NAMES
from mlxnb.events import ToolCall, Usage

EXPECTED_DTYPES = {
    "started_at": "datetime64[ns, UTC]",
    **dict.fromkeys(
        [
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "tool_call_errors",
            "schema_version",
            "image_count",
            "draft_tokens",
            "accepted_draft_tokens",
        ],
        "Int64",
    ),
    **dict.fromkeys(
        ["duration_s", "time_to_first_token_s", "prompt_tps", "generation_tps", "peak_memory_gb"],
        "Float64",
    ),
}


def cell(value: Any) -> Any:
    """A DataFrame cell as the record holds it (NA as None, Timestamp as datetime)."""
    if value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): cell(v) for k, v in row.items()} for row in frame.to_dict("records")]


def as_dicts(records: list[TurnRecord]) -> list[dict[str, Any]]:
    return [{name: getattr(r, name) for name in COLUMN_NAMES} for r in records]


# --- DataFrame ---------------------------------------------------------------------------------


def test_frame_has_every_column_with_explicit_dtypes(filled: AuditLog) -> None:
    frame = filled.df
    assert list(frame.columns) == list(COLUMN_NAMES)
    for name, dtype in frame.dtypes.items():
        assert str(dtype) == EXPECTED_DTYPES.get(str(name), "string"), name
        if str(dtype) == "string":
            assert isinstance(dtype, pd.StringDtype)


def test_empty_log_has_the_same_dtypes(any_log: AuditLog, records: list[TurnRecord]) -> None:
    empty = any_log.df
    assert empty.empty
    with AuditLog(":memory:") as other:
        other.append(records[0])
        assert empty.dtypes.equals(other.df.dtypes)


def test_frame_values_match_the_records_in_append_order(
    any_log: AuditLog, records: list[TurnRecord]
) -> None:
    for record in records:
        any_log.append(record)
    assert frame_records(any_log.df) == as_dicts(records)
    assert list(any_log) == records
    assert len(any_log) == len(records)


def test_image_columns_in_the_frame(any_log: AuditLog, make_record: MakeRecord) -> None:
    two, none = make_record(images=image_summaries(2)), make_record()
    any_log.append(two)
    any_log.append(none)
    frame = any_log.df
    assert str(frame["image_count"].dtype) == "Int64"
    assert isinstance(frame["images"].dtype, pd.StringDtype)
    assert list(frame["image_count"]) == [2, 0]
    assert json.loads(frame["images"].iloc[0]) == image_summaries(2)
    assert frame["images"].iloc[1] is pd.NA
    assert list(any_log) == [two, none]
    with_images = frame.loc[frame["image_count"] > 0, "request_id"]
    assert list(with_images) == [two.request_id]


def test_get_by_request_id(filled: AuditLog, records: list[TurnRecord]) -> None:
    assert filled.get(records[5].request_id) == records[5]
    assert filled.get("no-such-id") is None


def test_frame_refreshes_after_each_append(
    any_log: AuditLog, make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    for count in range(1, 4):
        any_log.append(make_record(make_turn(f"turn {count}")))
        frame = any_log.df
        assert len(frame) == len(any_log) == count
        assert frame["content"].iloc[-1] == f"turn {count}"


def test_changing_a_returned_frame_leaves_the_log_alone(filled: AuditLog) -> None:
    frame = filled.df
    frame.loc[0, "content"] = "tampered"
    del frame["model"]
    again = filled.df
    assert again.loc[0, "content"] == "answer 0"
    assert "model" in again.columns


def _is(column: str, *values: str) -> Callable[[TurnRecord], bool]:
    return lambda r: getattr(r, column) in values


FIVE_PAST = BASE_TIME + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"source": "eval"}, _is("source", "eval")),
        ({"source": ["widget", "server"]}, _is("source", "widget", "server")),
        ({"model": "beta"}, _is("model", "beta")),
        ({"status": "error"}, _is("status", "error")),
        (
            {"status": ("cancelled", "error"), "model": "alpha"},
            lambda r: r.status in ("cancelled", "error") and r.model == "alpha",
        ),
        ({"since": FIVE_PAST}, lambda r: r.started_at >= FIVE_PAST),
        ({"since": FIVE_PAST.replace(tzinfo=None)}, lambda r: r.started_at >= FIVE_PAST),
        ({"since": "2025-03-01 13:05:00.25+01:00"}, lambda r: r.started_at >= FIVE_PAST),
        (
            {"since": FIVE_PAST, "source": "python"},
            lambda r: r.started_at >= FIVE_PAST and r.source == "python",
        ),
    ],
    ids=[
        "source",
        "sources",
        "model",
        "status",
        "statuses+model",
        "since",
        "since-naive",
        "since-text",
        "since+source",
    ],
)
def test_filters(
    filled: AuditLog,
    records: list[TurnRecord],
    filters: dict[str, Any],
    keep: Callable[[TurnRecord], bool],
) -> None:
    expected = [r.request_id for r in records if keep(r)]
    assert 0 < len(expected) < len(records)  # the case really filters something
    assert list(filled.to_pandas(**filters)["request_id"]) == expected


def test_since_timedelta_counts_back_from_now(log: AuditLog, make_record: MakeRecord) -> None:
    now = datetime.now(timezone.utc)
    old, recent = make_record(started_at=now - timedelta(days=2)), make_record(started_at=now)
    log.append(old)
    log.append(recent)
    assert list(log.to_pandas(since=timedelta(days=1))["request_id"]) == [recent.request_id]


def test_filter_matching_nothing_is_empty_and_typed(filled: AuditLog) -> None:
    frame = filled.to_pandas(model="gamma")
    assert frame.empty and frame.dtypes.equals(filled.df.dtypes)


# --- summary -----------------------------------------------------------------------------------


def test_summary_statistics(log: AuditLog, make_record: MakeRecord, make_turn: MakeTurn) -> None:
    spec = [  # duration, ttft, generation tps, finish reason
        (1.0, 0.1, 10.0, "stop"),
        (2.0, 0.2, 20.0, "stop"),
        (3.0, 0.3, None, "error"),
        (4.0, None, 30.0, "cancelled"),
    ]
    for duration, ttft, tps, finish in spec:
        usage = Usage(100, 10, 0, ttft, 500.0, tps)
        log.append(
            make_record(
                make_turn(finish_reason=finish, usage=usage), model="a", duration_s=duration
            )
        )
    log.append(
        make_record(
            make_turn(usage=Usage(7, 3, 0, 0.5, 50.0, 5.0)),
            model="b",
            source="server",
            duration_s=9.0,
        )
    )

    table = log.summary(by="model")
    a = table.loc["a"]
    assert (a["turns"], a["errors"], a["cancelled"]) == (4, 1, 1)
    assert a["duration_p50_s"] == pytest.approx(2.5)
    assert a["duration_p95_s"] == pytest.approx(1.0 + 0.95 * 3.0)  # linear interpolation
    assert a["ttft_p50_s"] == pytest.approx(0.2)  # NA skipped
    assert a["generation_tps_mean"] == pytest.approx(20.0)
    assert (a["prompt_tokens"], a["completion_tokens"]) == (400, 40)
    assert table.loc["b", "duration_p50_s"] == pytest.approx(9.0)

    default = log.summary()
    assert list(default.index.names) == ["model", "source"]
    assert default.loc[("b", "server"), "turns"] == 1

    overall = log.summary(by=())
    assert len(overall) == 1 and overall["turns"].iloc[0] == 5
    assert overall["errors"].iloc[0] == 1


def test_summary_of_empty_log(any_log: AuditLog) -> None:
    table = any_log.summary()
    assert table.empty
    assert "duration_p95_s" in table.columns


# --- export / import ---------------------------------------------------------------------------

TRICKY_TEXTS = [
    "",
    "NA",
    "null",
    "None",
    'commas, "quotes", and\nnewlines\r\nand\ttabs',
    "emoji 🚀 and accents: Zoë, 中文",
    "<b>html</b> & entities &amp;",
    "   leading and trailing spaces   ",
]


@pytest.fixture
def tricky(log: AuditLog, make_record: MakeRecord, make_turn: MakeTurn) -> AuditLog:
    for i, text in enumerate(TRICKY_TEXTS):
        usage = Usage(2**40 + i, i, 0, 0.1 + 0.2, 1e-300 if i % 2 else None, 12345.678901234567)
        calls = (ToolCall(0, "c", "f", {"text": text}),) if i % 2 else ()
        turn = make_turn(
            text,
            text[::-1],
            "error" if i == 3 else "stop",
            tool_calls=calls,
            usage=usage,
            error=text or None if i == 3 else None,
        )
        log.append(
            make_record(
                turn,
                started_at=BASE_TIME + timedelta(microseconds=i),
                conversation_id=text or None,
                duration_s=0.5 + (i + 38) / 100,
                images=[{**image, "format": text} for image in image_summaries(i % 3, i)],
            )
        )
    return log


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_export_round_trips_values_and_dtypes(
    tricky: AuditLog, tmp_path: Path, suffix: str
) -> None:
    path = tricky.export(tmp_path / f"out{suffix}")
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    back = read_export(path)
    original = tricky.df
    assert back.dtypes.equals(original.dtypes)
    pd.testing.assert_frame_equal(back, original)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_import_file_adds_only_unknown_rows(tricky: AuditLog, tmp_path: Path, suffix: str) -> None:
    path = tricky.export(tmp_path / f"out{suffix}")
    with AuditLog(tmp_path / "other.sqlite3") as other:
        assert other.import_file(path) == len(tricky)
        assert list(other) == list(tricky)
        assert other.import_file(path) == 0
        assert len(other) == len(tricky)


def test_import_applies_the_content_policy(filled: AuditLog, tmp_path: Path) -> None:
    path = filled.export(tmp_path / "all.jsonl")
    with AuditLog(":memory:", log_content=False) as meta_only:
        meta_only.import_file(path)
        assert set(meta_only.df["content"]) == {""}
        assert list(meta_only.df["request_id"]) == list(filled.df["request_id"])


def test_jsonl_export_is_one_json_object_per_line(filled: AuditLog, tmp_path: Path) -> None:
    lines = filled.export(tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(filled)
    first = json.loads(lines[0])
    assert list(first) == list(COLUMN_NAMES)
    assert first["started_at"] == "2025-03-01T12:00:00.250000Z"


@pytest.mark.parametrize("name", ["out.xlsx", "out", "out.json"])
def test_unknown_export_format_is_refused(filled: AuditLog, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="export"):
        filled.export(tmp_path / name)
    with pytest.raises(ValueError):
        read_export(tmp_path / name)


def test_read_export_names_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "foreign.csv"
    pd.DataFrame({"request_id": ["a"], "model": ["m"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="started_at"):
        read_export(path)


# --- retention ---------------------------------------------------------------------------------


def test_prune(any_log: AuditLog, make_record: MakeRecord) -> None:
    now = datetime.now(timezone.utc)
    ages = [timedelta(days=10), timedelta(days=3), timedelta(hours=1), timedelta(0)]
    made = [make_record(started_at=now - age) for age in ages]
    for record in made:
        any_log.append(record)
    assert any_log.prune(timedelta(days=2)) == 2
    assert [r.request_id for r in any_log] == [r.request_id for r in made[2:]]
    assert any_log.prune(timedelta(days=2)) == 0
    assert any_log.prune(now - timedelta(minutes=30)) == 1
    assert list(any_log) == made[3:]
    assert len(any_log.df) == 1


# --- content policy and caps -------------------------------------------------------------------


def test_metadata_only_log(tmp_path: Path, make_record: MakeRecord, make_turn: MakeTurn) -> None:
    calls = (ToolCall(0, "a", "search", {"q": "secret"}), ToolCall(1, "b", "open", {"id": 3}))
    turn = make_turn("secret answer", "secret thoughts", "error", tool_calls=calls, error="boom")
    record = make_record(turn, model="m", duration_s=2.0)
    with AuditLog(tmp_path / "meta.sqlite3", log_content=False) as log:
        log.append(record)
        stored = log.get(record.request_id)
    assert stored is not None
    assert (stored.content, stored.reasoning) == ("", "")
    assert json.loads(stored.tool_calls) == [
        {"name": "search", "arguments": None},
        {"name": "open", "arguments": None},
    ]
    assert "secret" not in (tmp_path / "meta.sqlite3").read_bytes().decode("latin-1")
    kept = ("prompt_tokens", "completion_tokens", "duration_s", "model", "status", "error_message")
    assert all(getattr(stored, name) == getattr(record, name) for name in kept)


def test_metadata_only_log_keeps_image_hashes(
    tmp_path: Path, make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    summaries = image_summaries(2)
    record = make_record(make_turn("secret answer about the picture"), images=summaries)
    with AuditLog(tmp_path / "meta.sqlite3", log_content=False) as log:
        log.append(record)
        stored = log.get(record.request_id)
        frame = log.df
    assert stored is not None and stored.content == ""
    assert (stored.image_count, stored.images) == (2, record.images)
    assert [image["sha256"] for image in json.loads(frame["images"].iloc[0])] == [
        image["sha256"] for image in summaries
    ]
    assert frame["image_count"].iloc[0] == 2


def _stored_images(record: TurnRecord, cap: int, log_content: bool = True) -> TurnRecord:
    with AuditLog(":memory:", max_text_chars=cap, log_content=log_content) as log:
        log.append(record)
        stored = log.get(record.request_id)
        assert stored is not None
        return stored


@pytest.mark.parametrize("log_content", [True, False])
def test_capped_images_drop_whole_summaries_from_the_end(
    make_record: MakeRecord, log_content: bool
) -> None:
    summaries = image_summaries(5)
    record = make_record(images=summaries)
    assert record.images is not None
    one = len(json.dumps(summaries[0]))
    stored = _stored_images(record, 3 * one, log_content)
    assert stored.image_count == 5  # the count is never cut
    assert stored.images is not None and len(stored.images) <= 3 * one
    kept = json.loads(stored.images)  # valid JSON: never cut mid-way
    assert kept[-1] == {"omitted": 5 - len(kept[:-1])}
    assert 0 < len(kept[:-1]) < 5 and kept[:-1] == summaries[: len(kept) - 1]
    # a cap the list fits is no cut at all
    assert _stored_images(record, len(record.images), log_content).images == record.images


def test_a_capped_image_list_is_capped_again_on_import(
    make_record: MakeRecord, tmp_path: Path
) -> None:
    record = make_record(images=image_summaries(6))
    with AuditLog(":memory:", max_text_chars=600) as first:
        first.append(record)
        path = first.export(tmp_path / "capped.jsonl")
        once = json.loads(first.df["images"].iloc[0])
    with AuditLog(":memory:", max_text_chars=300) as second:
        assert second.import_file(path) == 1
        stored = second.get(record.request_id)
    assert stored is not None and stored.images is not None and len(stored.images) <= 300
    twice = json.loads(stored.images)
    assert len(twice) < len(once) and twice[:-1] == once[: len(twice) - 1]
    assert len(twice[:-1]) + twice[-1]["omitted"] == stored.image_count == 6


def test_images_that_do_not_fit_at_all_keep_only_the_count(make_record: MakeRecord) -> None:
    stored = _stored_images(make_record(images=image_summaries(3)), 10)
    assert (stored.image_count, stored.images) == (3, None)
    only_marker = _stored_images(make_record(images=image_summaries(3)), 20)
    assert (only_marker.image_count, only_marker.images) == (3, '[{"omitted": 3}]')


@pytest.mark.parametrize("field", ["content", "reasoning", "error_message", "conversation_id"])
def test_long_text_is_capped_with_a_marker(
    make_record: MakeRecord, make_turn: MakeTurn, field: str
) -> None:
    long_text = "x" * 500
    record = make_record(make_turn(error="e", finish_reason="error"))
    record = TurnRecord.from_row(
        tuple(
            long_text if name == field else value
            for name, value in zip(COLUMN_NAMES, record.to_row(), strict=True)
        )
    )
    with AuditLog(":memory:", max_text_chars=60) as log:
        log.append(record)
        stored = getattr(log.get(record.request_id), field)
    assert len(stored) <= 60
    assert stored.startswith("xxxx") and "truncated" in stored and "500" in stored


def test_capped_tool_calls_stay_valid_json(make_record: MakeRecord, make_turn: MakeTurn) -> None:
    calls = tuple(ToolCall(i, f"c{i}", f"tool{i}", {"blob": "y" * 100}) for i in range(5))
    record = make_record(make_turn(tool_calls=calls, finish_reason="tool_calls"))
    with AuditLog(":memory:", max_text_chars=80) as log:
        log.append(record)
        stored = log.get(record.request_id)
    assert stored is not None and len(stored.tool_calls) <= 80
    parsed = json.loads(stored.tool_calls)
    assert parsed and all(call["arguments"] is None for call in parsed)
    assert [call["name"] for call in parsed] == [f"tool{i}" for i in range(len(parsed))]


def test_capped_sampling_is_dropped_whole_never_cut(
    make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    record = make_record(make_turn(error="e", finish_reason="error"))
    sampling = json.dumps({"stop": ["z" * 200], "temperature": 0.7})
    record = TurnRecord.from_row(
        tuple(
            sampling if name == "sampling" else value
            for name, value in zip(COLUMN_NAMES, record.to_row(), strict=True)
        )
    )
    with AuditLog(":memory:", max_text_chars=80) as log:
        log.append(record)
        stored = log.get(record.request_id)
    assert stored is not None and stored.sampling is None
    with AuditLog(":memory:", max_text_chars=1000) as roomy:
        roomy.append(record)
        kept = roomy.get(record.request_id)
    assert kept is not None and json.loads(kept.sampling or "") == json.loads(sampling)


def test_short_text_is_untouched(
    log: AuditLog, make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    record = make_record(make_turn("a" * 100))
    with AuditLog(":memory:", max_text_chars=100) as exact:
        exact.append(record)
        assert exact.get(record.request_id) == record


# --- notebook views ----------------------------------------------------------------------------


def test_text_repr_shows_totals_and_last_rows(filled: AuditLog) -> None:
    text = repr(filled)
    assert "12 turns, 3 errors, 3 cancelled" in text
    assert str(filled.path) in text
    assert "answer 11" in text and "answer 7" in text
    assert "answer 6" not in text  # only the last five rows


def test_html_repr_escapes_model_output(
    log: AuditLog, make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    log.append(make_record(make_turn("<script>alert(1)</script>"), model="<img src=x>"))
    html = log._repr_html_()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "1 turns" in html


def test_repr_of_empty_and_closed_logs(db_path: Path) -> None:
    log = AuditLog(db_path)
    assert "0 turns" in repr(log) and "0 turns" in log._repr_html_()
    log.close()
    assert "closed" in repr(log) and "closed" in log._repr_html_()


def test_live_view_refreshes_after_appends(log: AuditLog, make_record: MakeRecord) -> None:
    pytest.importorskip("ipywidgets")
    widget = log.live(rows=3, interval=0.05)
    assert "0 turns" in widget.value
    log.append(make_record(model="live-model"))
    deadline = time.monotonic() + 10
    while "live-model" not in widget.value and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "live-model" in widget.value and "1 turns" in widget.value


def test_a_failing_listener_does_not_fail_the_append(
    log: AuditLog, make_record: MakeRecord, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(record: TurnRecord) -> None:
        raise RuntimeError("view broke")

    log.subscribe(broken)
    unsubscribe = log.subscribe(lambda r: seen.append(r.request_id))
    record = make_record()
    log.append(record)
    assert len(log) == 1 and seen == [record.request_id]
    assert "listener failed" in caplog.text
    unsubscribe()
    log.append(make_record())
    assert seen == [record.request_id]


# --- lifecycle and configuration ---------------------------------------------------------------


def test_closed_log_refuses_use(db_path: Path, make_record: MakeRecord) -> None:
    log = AuditLog(db_path)
    log.append(make_record())
    log.close()
    log.close()  # idempotent
    assert log.closed
    with pytest.raises(ValueError, match="closed"):
        log.append(make_record())
    with pytest.raises(ValueError, match="closed"):
        log.to_pandas()
    with AuditLog(db_path) as reopened:
        assert len(reopened) == 1


def test_empty_log_is_truthy(any_log: AuditLog) -> None:
    assert len(any_log) == 0
    assert (any_log or None) is any_log


def test_default_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "env" / "audit.db"
    monkeypatch.setenv("MLXNB_AUDIT", str(target))
    assert default_path() == target
    with AuditLog() as log:
        assert log.path == target and target.exists()
    monkeypatch.setenv("MLXNB_AUDIT", ":memory:")
    with AuditLog() as log:
        assert log.path is None


def test_default_path_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLXNB_AUDIT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "mlxnb" / "audit.sqlite3"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_path() == tmp_path / "home" / ".local" / "share" / "mlxnb" / "audit.sqlite3"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_path() == (
        tmp_path / "home" / "Library" / "Application Support" / "mlxnb" / "audit.sqlite3"
    )


def test_in_memory_options(tmp_path: Path, make_record: MakeRecord) -> None:
    with AuditLog(durable=False) as log:
        assert log.path is None
        log.append(make_record())
        assert len(log) == 1
    with pytest.raises(ValueError, match="memory"):
        AuditLog(tmp_path / "x.sqlite3", durable=False)
    with pytest.raises(ValueError):
        AuditLog(":memory:", max_text_chars=0)


def test_newer_schema_is_refused(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as con:
        con.execute("PRAGMA user_version=99")
    with pytest.raises(ValueError, match="schema version 99"):
        AuditLog(db_path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not sqlite at all, " * 100)
    with pytest.raises(ValueError, match="not an SQLite"):
        AuditLog(path)


def test_store_is_wal_with_the_schema_version(log: AuditLog) -> None:
    assert log.path is not None
    with closing(sqlite3.connect(log.path)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_filtered_frames_are_cached_per_filter_and_refreshed(
    filled: AuditLog, records: list[TurnRecord], make_record: MakeRecord
) -> None:
    evals = [r.request_id for r in records if r.source == "eval"]
    widgets = [r.request_id for r in records if r.source == "widget"]
    assert list(filled.to_pandas(source="eval")["request_id"]) == evals
    assert list(filled.to_pandas(source="widget")["request_id"]) == widgets
    assert list(filled.to_pandas(source="eval")["request_id"]) == evals
    late = make_record(source="eval")
    filled.append(late)
    assert list(filled.to_pandas(source="eval")["request_id"]) == [*evals, late.request_id]
    assert list(filled.to_pandas(source="widget")["request_id"]) == widgets
    assert len(filled.df) == len(records) + 1


@pytest.fixture
def rows_read(filled: AuditLog, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many stored rows each of ``filled``'s frame reads handed to the frame builder."""
    store = filled._store
    select_batches = store.select_batches
    counts: list[int] = []

    def counting(consume: Callable[[list[Any]], None], *args: Any, **kwargs: Any) -> Any:
        counts.append(0)

        def count_and_consume(rows: list[Any]) -> None:
            counts[-1] += len(rows)
            consume(rows)

        return select_batches(count_and_consume, *args, **kwargs)

    monkeypatch.setattr(store, "select_batches", counting)
    return counts


def read_fresh(path: Path, **filters: Any) -> pd.DataFrame:
    """Every matching row, read by a log with nothing cached."""
    with AuditLog(path) as fresh:
        return fresh.to_pandas(**filters)


@pytest.mark.parametrize("filters", [{}, {"source": "eval"}, {"model": ["alpha", "beta"]}])
def test_a_read_after_appends_reads_only_the_rows_appended(
    filled: AuditLog,
    db_path: Path,
    rows_read: list[int],
    make_record: MakeRecord,
    filters: dict[str, Any],
) -> None:
    first = filled.to_pandas(**filters)
    late = [make_record(source="eval", model="beta") for _ in range(2)]
    for record in late:
        filled.append(record)
    with AuditLog(db_path) as other:  # another process's appends count the same
        other.append(make_record(source="widget", model="alpha"))

    frame = filled.to_pandas(**filters)

    assert rows_read[0] == len(first)
    assert rows_read[1] == len(frame) - len(first) <= 3
    pd.testing.assert_frame_equal(frame, read_fresh(db_path, **filters))


def test_after_a_prune_every_row_is_read_again(
    filled: AuditLog, db_path: Path, rows_read: list[int], make_record: MakeRecord
) -> None:
    before = filled.to_pandas()
    assert filled.prune(FIVE_PAST) == 5
    filled.append(make_record())

    frame = filled.to_pandas()

    assert len(frame) == len(before) - 5 + 1
    assert rows_read[-1] == len(frame)
    pd.testing.assert_frame_equal(frame, read_fresh(db_path))


def test_a_last_row_deleted_and_replaced_under_its_rowid_is_read_again(
    filled: AuditLog, db_path: Path, rows_read: list[int], make_record: MakeRecord
) -> None:
    before = filled.to_pandas()
    # Not something mlxnb does: SQLite hands a deleted last rowid to the next insert.
    with closing(sqlite3.connect(db_path)) as con, con:
        con.execute("DELETE FROM turns WHERE rowid = (SELECT max(rowid) FROM turns)")
    filled.append(make_record())

    frame = filled.to_pandas()

    assert len(frame) == len(before)
    assert frame["request_id"].iloc[-1] != before["request_id"].iloc[-1]
    assert rows_read[-1] == len(frame)
    pd.testing.assert_frame_equal(frame, read_fresh(db_path))


def _set_a_cell(frame: pd.DataFrame) -> None:
    frame.loc[0, "content"] = "changed by the caller"


def _add_a_column(frame: pd.DataFrame) -> None:
    frame["mine"] = 1


def _change_a_column_in_place(frame: pd.DataFrame) -> None:
    frame["prompt_tokens"] += 1000


def _rename_the_columns(frame: pd.DataFrame) -> None:
    frame.columns = [f"column {index}" for index in range(len(frame.columns))]


@pytest.mark.parametrize(
    "change", [_set_a_cell, _add_a_column, _change_a_column_in_place, _rename_the_columns]
)
@pytest.mark.parametrize("filters", [{}, {"source": "eval"}])
def test_changing_a_returned_frame_leaves_the_cached_one_alone(
    filled: AuditLog, change: Callable[[pd.DataFrame], None], filters: dict[str, str]
) -> None:
    first = filled.to_pandas(**filters)  # built: the cache keeps it
    expected = first.copy(deep=True)
    change(first)
    second = filled.to_pandas(**filters)  # from the cache
    change(second)

    pd.testing.assert_frame_equal(filled.to_pandas(**filters), expected)
