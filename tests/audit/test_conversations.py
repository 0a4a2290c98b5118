"""The saved-conversations table in the audit log's file (schema version 6)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
from audit_helpers import MakeRecord

from mlxnb._audit import SCHEMA_VERSION, AuditLog
from mlxnb._audit.conversations import TABLE, SavedConversation, title_of
from mlxnb._audit.record import COLUMNS
from mlxnb._audit.store import TABLE as TURNS

HISTORY = [
    {"role": "user", "content": "what is 2+2?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "use the tool",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "name": "add", "content": "4"},
    {"role": "assistant", "content": "4 — ünïcode"},
]


def saved(conversation_id: str = "conv-1", **changes: object) -> SavedConversation:
    values: dict[str, object] = {
        "conversation_id": conversation_id,
        "title": "what is 2+2?",
        "model": "tiny",
        "source": "widget",
        "messages": HISTORY,
        "turn_summaries": [{"finish_reason": "stop", "seconds": 1.5}],
        "transcript": [{"id": "t1", "user": "what is 2+2?", "parts": [{"kind": "thinking"}]}],
    }
    return SavedConversation(**(values | changes))  # type: ignore[arg-type]


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as con:
        return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_conversation_round_trips_and_is_replaced_in_place(db_path: Path) -> None:
    with AuditLog(db_path) as log:
        assert log.saved_conversations.save(saved())
        first = log.saved_conversations.get("conv-1")
        longer = [*HISTORY, {"role": "user", "content": "and 3+3?"}]
        log.saved_conversations.save(saved(messages=longer, model="other", turn_summaries=[{}, {}]))
    with AuditLog(db_path) as again:  # another kernel reads it back
        back = again.saved_conversations.get("conv-1")
        frame = again.conversations()
    assert first is not None and back is not None
    assert first.messages == HISTORY and first.transcript == saved().transcript
    assert back.messages == longer and back.model == "other"
    assert back.created_at == first.created_at and back.updated_at >= first.updated_at
    assert list(frame["id"]) == ["conv-1"] and list(frame["turns"]) == [2]


def test_the_list_is_newest_first_and_typed(log: AuditLog) -> None:
    for name in ("a", "b", "c"):
        log.saved_conversations.save(saved(name, title=f"about {name}"))
    log.saved_conversations.save(saved("a", title="about a"))  # a is the newest again
    frame = log.conversations()
    assert list(frame["id"]) == ["a", "c", "b"]
    assert list(frame.columns) == [
        "id", "title", "model", "source", "turns", "created_at", "updated_at"
    ]  # fmt: skip
    assert str(frame["updated_at"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["turns"].dtype) == "Int64"
    assert list(log.conversations(limit=1)["id"]) == ["a"]
    assert log.saved_conversations.get("missing") is None


def test_nothing_is_saved_without_content_logging(db_path: Path) -> None:
    with AuditLog(db_path, log_content=False) as log:
        assert not log.saved_conversations.save(saved())
        assert log.conversations().empty
        assert isinstance(log.conversations(), pd.DataFrame)


def test_titles_are_one_short_line() -> None:
    assert title_of("  hello\n  world ") == "hello world"
    long = title_of("word " * 50)
    assert len(long) == 80 and long.endswith("…")


def test_a_version_5_file_gains_the_conversations_table(
    db_path: Path, make_record: MakeRecord
) -> None:
    columns = [c for c in COLUMNS if c.since <= 5]
    record = make_record(model="v5")
    with closing(sqlite3.connect(db_path, isolation_level=None)) as con:
        con.execute(f"CREATE TABLE {TURNS} ({', '.join(c.sql for c in columns)})")
        con.execute("PRAGMA user_version=5")
        values = dict(zip([c.name for c in COLUMNS], record.to_row(), strict=True))
        con.execute(
            f"INSERT INTO {TURNS} VALUES ({', '.join('?' * len(columns))})",
            tuple(values[c.name] for c in columns),
        )
    assert tables(db_path) == {TURNS}
    with AuditLog(db_path) as log:
        assert log.conversations().empty
        log.saved_conversations.save(saved())
        assert len(log) == 1 and log.df["model"].iloc[0] == "v5"
    assert tables(db_path) == {TURNS, TABLE}
    with closing(sqlite3.connect(db_path)) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    with AuditLog(db_path) as again:  # opening the migrated file keeps what was saved
        assert again.saved_conversations.get("conv-1") is not None
