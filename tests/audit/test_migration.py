"""Files and exports from the previous schema version: migrated on open, read with defaults."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from audit_helpers import (
    NEW_COLUMNS,
    OLD_COLUMNS,
    OLD_VERSION,
    MakeRecord,
    MakeTurn,
    child_env,
    image_summaries,
    make_old_export,
    old_row,
    write_old_database,
)

from mlxnb._audit import SCHEMA_VERSION, AuditLog, TurnRecord, read_export
from mlxnb._audit.record import COLUMN_NAMES, COLUMNS
from mlxnb._audit.store import TABLE
from mlxnb.errors import AuditError
from mlxnb.events import ToolCall


def table_columns(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as con:
        return [row[1] for row in con.execute(f"PRAGMA table_info({TABLE})")]


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as con:
        return int(con.execute("PRAGMA user_version").fetchone()[0])


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as con:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])


def as_old(record: TurnRecord) -> TurnRecord:
    """What a row the previous version wrote reads back as."""
    return dataclasses.replace(record, schema_version=OLD_VERSION)


@pytest.fixture
def old_records(make_record: MakeRecord, make_turn: MakeTurn) -> list[TurnRecord]:
    calls = (ToolCall(0, "c", "lookup", {"q": "old"}),)
    return [
        make_record(make_turn("from the old version"), model="old"),
        make_record(make_turn("", finish_reason="tool_calls", tool_calls=calls), model="old"),
    ]


@pytest.fixture
def old_db(db_path: Path, old_records: list[TurnRecord]) -> Path:
    write_old_database(db_path, old_records)
    assert table_columns(db_path) == [c.name for c in OLD_COLUMNS]
    assert user_version(db_path) == OLD_VERSION
    return db_path


def test_an_old_file_is_migrated_on_open(
    old_db: Path, old_records: list[TurnRecord], make_record: MakeRecord
) -> None:
    new = make_record(images=image_summaries(2), model="new")
    with AuditLog(old_db) as log:
        assert user_version(old_db) == SCHEMA_VERSION
        assert table_columns(old_db) == list(COLUMN_NAMES)
        log.append(new)
        frame = log.df
        assert list(log) == [*map(as_old, old_records), new]
    assert list(frame["request_id"]) == [r.request_id for r in [*old_records, new]]
    assert list(frame["image_count"]) == [0, 0, 2]
    assert frame["images"].iloc[0] is pd.NA and frame["images"].iloc[1] is pd.NA
    assert json.loads(frame["images"].iloc[2]) == image_summaries(2)
    assert list(frame["schema_version"]) == [OLD_VERSION, OLD_VERSION, SCHEMA_VERSION]
    assert str(frame["image_count"].dtype) == "Int64"
    assert isinstance(frame["images"].dtype, pd.StringDtype)
    assert frame["content"].iloc[0] == "from the old version"
    assert integrity(old_db) == "ok"

    with AuditLog(old_db) as again:  # opening a migrated file changes nothing
        assert len(again) == 3 and again.get(new.request_id) == new
    assert table_columns(old_db) == list(COLUMN_NAMES)


def test_filters_and_summary_work_on_a_migrated_file(old_db: Path, make_record: MakeRecord) -> None:
    with AuditLog(old_db) as log:
        log.append(make_record(images=image_summaries(1), model="new"))
        assert list(log.to_pandas(model="old")["image_count"]) == [0, 0]
        assert list(log.to_pandas(model="new")["image_count"]) == [1]
        assert log.summary(by="model").loc["old", "turns"] == 2


def test_an_old_writer_still_appends_to_a_migrated_file(
    old_db: Path, make_record: MakeRecord
) -> None:
    """An older mlxnb that opened the file before the migration names only its own columns."""
    late = make_record(model="old")
    with AuditLog(old_db) as log:
        names = ", ".join(c.name for c in OLD_COLUMNS)
        with closing(sqlite3.connect(old_db, isolation_level=None)) as old_kernel:
            old_kernel.execute(
                f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' * len(OLD_COLUMNS))})",
                old_row(late),
            )
        assert log.get(late.request_id) == as_old(late)
        assert log.df["image_count"].iloc[-1] == 0


def test_a_failed_migration_leaves_the_old_file(db_path: Path, make_record: MakeRecord) -> None:
    write_old_database(db_path, [make_record()])
    with closing(sqlite3.connect(db_path, isolation_level=None)) as con:
        con.execute(f"ALTER TABLE {TABLE} DROP COLUMN reasoning")
    before = table_columns(db_path)
    with pytest.raises(AuditError, match=r"lacks its columns \['reasoning'\]"):
        AuditLog(db_path)
    assert user_version(db_path) == OLD_VERSION  # rolled back: not half-migrated
    assert table_columns(db_path) == before


def test_a_newer_file_is_still_refused(old_db: Path) -> None:
    with closing(sqlite3.connect(old_db)) as con:
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(AuditError, match=f"schema version {SCHEMA_VERSION + 1}"):
        AuditLog(old_db)
    assert table_columns(old_db) == [c.name for c in OLD_COLUMNS]


def open_at_once(path: Path, count: int, record: MakeRecord) -> list[BaseException]:
    """``count`` threads open ``path`` together and append a row each; returns their errors."""
    opened: list[AuditLog] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def open_and_append() -> None:
        try:
            barrier.wait()
            log = AuditLog(path)
            opened.append(log)
            log.append(record(images=image_summaries(1)))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=open_and_append) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for log in opened:
        log.close()
    return errors


def test_threads_opening_an_old_file_at_once_migrate_it_once(
    tmp_path: Path, old_records: list[TurnRecord], make_record: MakeRecord
) -> None:
    for round_ in range(10):
        path = tmp_path / f"round-{round_}.sqlite3"
        write_old_database(path, old_records)
        assert open_at_once(path, 4, make_record) == []
        assert table_columns(path) == list(COLUMN_NAMES)
        with AuditLog(path) as log:
            assert list(log.df["image_count"]) == [0, 0, 1, 1, 1, 1]


OPENER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from mlxnb._audit import AuditLog, TurnRecord
    from mlxnb._ids import new_request_id
    from mlxnb.events import Turn, Usage

    path, tag = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(2)
    with AuditLog(path) as log:  # every child opens the old file at the same moment
        summary = {"sha256": tag * 64, "format": "PNG", "width": 2, "height": 3, "bytes": 4}
        record = TurnRecord.from_turn(
            Turn("seen", "", (), (), "stop", Usage(5, 1)), request_id=new_request_id(),
            source="python", model=tag, started_at=datetime.now(timezone.utc),
            duration_s=0.01, images=[summary],
        )
        log.append(record)
    print("done", flush=True)
    """
)


def test_processes_opening_an_old_file_at_once(old_db: Path, old_records: list[TurnRecord]) -> None:
    tags = ["a", "b", "c"]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(old_db), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for tag in tags
    ]
    outputs = []
    for child in children:  # all are ready (imports done) before any opens the file
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        outputs.append(child.communicate(timeout=120))
    assert [child.returncode for child in children] == [0, 0, 0], outputs
    assert [out.split() for out, _ in outputs] == [["done"]] * 3

    assert user_version(old_db) == SCHEMA_VERSION
    assert table_columns(old_db) == list(COLUMN_NAMES)
    assert integrity(old_db) == "ok"
    with AuditLog(old_db) as log:
        frame = log.df
        assert list(log)[:2] == [as_old(r) for r in old_records]
    assert len(frame) == 5
    assert list(frame["image_count"])[:2] == [0, 0]
    new_rows = frame.iloc[2:].sort_values("model")
    assert list(new_rows["model"]) == tags and list(new_rows["image_count"]) == [1, 1, 1]
    hashes = [json.loads(text)[0]["sha256"] for text in new_rows["images"]]
    assert hashes == [tag * 64 for tag in tags]


# --- exports made before the image columns -----------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_an_old_export_reads_with_defaults(filled: AuditLog, tmp_path: Path, suffix: str) -> None:
    path = filled.export(tmp_path / f"old{suffix}")
    make_old_export(path)
    assert not set(NEW_COLUMNS) & set(
        json.loads(path.read_text().splitlines()[0])
        if suffix == ".jsonl"
        else pd.read_parquet(path).columns
        if suffix == ".parquet"
        else pd.read_csv(path, nrows=0).columns
    )
    back = read_export(path)
    original = filled.df
    assert back.dtypes.equals(original.dtypes)
    assert list(back.columns) == list(COLUMN_NAMES)
    assert list(back["image_count"]) == [0] * len(original)
    assert back["images"].isna().all()
    assert list(back["schema_version"]) == [OLD_VERSION] * len(original)
    kept = [name for name in COLUMN_NAMES if name not in (*NEW_COLUMNS, "schema_version")]
    pd.testing.assert_frame_equal(back[kept], original[kept])


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_an_old_export_imports(filled: AuditLog, tmp_path: Path, suffix: str) -> None:
    path = filled.export(tmp_path / f"old{suffix}")
    make_old_export(path)
    with AuditLog(tmp_path / "new.sqlite3") as other:
        assert other.import_file(path) == len(filled)
        expected = [
            dataclasses.replace(r, schema_version=OLD_VERSION, image_count=0, images=None)
            for r in filled
        ]
        assert list(other) == expected


def test_an_old_export_still_needs_the_old_columns(filled: AuditLog, tmp_path: Path) -> None:
    path = filled.export(tmp_path / "broken.jsonl")
    make_old_export(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    del lines[1]["reasoning"]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(AuditError, match="reasoning"):
        read_export(path)


# --- files from version 2 (images, no sampling) -------------------------------------------------


def test_a_version_2_file_gains_the_sampling_column(db_path: Path, make_record: MakeRecord) -> None:
    columns = [c for c in COLUMNS if c.since <= 2]
    names = ", ".join(c.name for c in columns)
    old = make_record(images=image_summaries(1), model="v2")
    values = dict(zip(COLUMN_NAMES, old.to_row(), strict=True)) | {"schema_version": 2}
    with closing(sqlite3.connect(db_path, isolation_level=None)) as con:
        con.execute(f"CREATE TABLE {TABLE} ({', '.join(c.sql for c in columns)})")
        con.execute("PRAGMA user_version=2")
        con.execute(
            f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' * len(columns))})",
            tuple(values[c.name] for c in columns),
        )
    new = make_record(sampling={"temperature": 0.6, "max_tokens": 64}, model="v3")
    with AuditLog(db_path) as log:
        log.append(new)
        frame = log.df
        assert list(log) == [dataclasses.replace(old, schema_version=2), new]
    assert user_version(db_path) == SCHEMA_VERSION == 6
    assert table_columns(db_path) == list(COLUMN_NAMES)
    assert frame["sampling"].iloc[0] is pd.NA
    assert list(frame["draft_tokens"]) == list(frame["accepted_draft_tokens"]) == [0, 0]
    assert frame["request"].isna().all()
    assert json.loads(frame["sampling"].iloc[1]) == {"temperature": 0.6, "max_tokens": 64}
    assert list(frame["image_count"]) == [1, 0]
    assert isinstance(frame["sampling"].dtype, pd.StringDtype)
