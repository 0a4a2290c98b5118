"""Builders shared by the audit tests: turns, records, image summaries, older-version files."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from mlxnb._audit import TurnRecord
from mlxnb._audit.record import COLUMNS
from mlxnb._audit.store import TABLE
from mlxnb._ids import new_request_id
from mlxnb.events import FinishReason, ToolCall, ToolCallError, Turn, Usage

REPO = Path(__file__).resolve().parents[2]
OLD_VERSION = 1
"""The schema version before images; its columns are the ones that version had."""
OLD_COLUMNS = tuple(column for column in COLUMNS if column.since <= OLD_VERSION)
NEW_COLUMNS = tuple(column.name for column in COLUMNS if column.since > OLD_VERSION)

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


def image_summary(n: int, fmt: str = "PNG") -> dict[str, Any]:
    """A summary as ``mlxnb._images.Image.summary()`` makes it, for a made-up image ``n``."""
    return {
        "sha256": hashlib.sha256(f"image {n}".encode()).hexdigest(),
        "format": fmt,
        "width": 64 + n,
        "height": 48 + 2 * n,
        "bytes": 1000 + 37 * n,
    }


def image_summaries(count: int, first: int = 0) -> list[dict[str, Any]]:
    return [image_summary(first + n, ("PNG", "JPEG")[n % 2]) for n in range(count)]


def child_env() -> dict[str, str]:
    """The environment of a child Python that imports this checkout's mlxnb."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def old_row(record: TurnRecord) -> tuple[Any, ...]:
    """``record`` as the previous schema version wrote it: its columns, its version number."""
    values = dict(zip((c.name for c in COLUMNS), record.to_row(), strict=True))
    values["schema_version"] = OLD_VERSION
    return tuple(values[column.name] for column in OLD_COLUMNS)


def write_old_database(path: Path, records: Sequence[TurnRecord]) -> None:
    """An audit file as the previous schema version made it (its DDL, its version)."""
    names = ", ".join(column.name for column in OLD_COLUMNS)
    marks = ", ".join("?" * len(OLD_COLUMNS))
    with closing(sqlite3.connect(path, isolation_level=None)) as con:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("BEGIN IMMEDIATE")
        con.execute(f"CREATE TABLE {TABLE} ({', '.join(c.sql for c in OLD_COLUMNS)})")
        con.execute(f"PRAGMA user_version={OLD_VERSION}")
        con.executemany(f"INSERT INTO {TABLE} ({names}) VALUES ({marks})", map(old_row, records))
        con.execute("COMMIT")


def make_old_export(path: Path) -> None:
    """Rewrite an export in place as the previous version wrote it: no newer columns."""
    suffix = path.suffix
    if suffix == ".jsonl":
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            for name in NEW_COLUMNS:
                del item[name]
            item["schema_version"] = OLD_VERSION
            lines.append(json.dumps(item, ensure_ascii=False) + "\n")
        path.write_text("".join(lines), encoding="utf-8")
    elif suffix == ".csv":  # every cell as the exact text it was written as
        text = pd.read_csv(path, dtype=str, keep_default_na=False)
        text = text.drop(columns=list(NEW_COLUMNS)).assign(schema_version=str(OLD_VERSION))
        text.to_csv(path, index=False)
    else:
        frame = pd.read_parquet(path).drop(columns=list(NEW_COLUMNS))
        frame.assign(schema_version=OLD_VERSION).to_parquet(path, index=False)


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
                images=image_summaries(i % 3, first=i),
            )
        )
    return records
