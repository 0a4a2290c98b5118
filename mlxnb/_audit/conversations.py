"""Saved chat histories: the ``conversations`` table beside the turns, in the audit log's file.

A :class:`~mlxnb.Conversation` writes its whole history here after each finished turn (one
row per conversation, replaced in one commit), so that ``resume=`` brings it back in another
kernel: the OpenAI-style messages (tool calls, tool results and reasoning included), a summary
of each turn (how it ended, how long it took) and, for the chat widget, its transcript (the
thinking and tool panes as the page drew them). The table came with schema version 6
(:mod:`mlxnb._audit.store` creates it, or adds it to an older file).

Nothing is saved when the log was opened with ``log_content=False``: a history is content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from mlxnb._audit.record import format_time

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

    import pandas as pd

TABLE = "conversations"
_COLUMNS = (
    "conversation_id", "title", "model", "source", "turns", "created_at", "updated_at",
    "messages", "turn_summaries", "transcript",
)  # fmt: skip
_LISTED = ("conversation_id", "title", "model", "source", "turns", "created_at", "updated_at")
TITLE_CHARS = 80


def create_table(con: sqlite3.Connection) -> None:
    """Create the table (inside the store's schema transaction); idempotent."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (conversation_id TEXT PRIMARY KEY, "
        "title TEXT NOT NULL, model TEXT NOT NULL, source TEXT NOT NULL, turns INTEGER NOT NULL, "
        "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages TEXT NOT NULL, "
        "turn_summaries TEXT NOT NULL, transcript TEXT NOT NULL)"
    )


def title_of(text: str) -> str:
    """A conversation's title: its first user message on one line, cut to a few words."""
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class Rows(Protocol):
    """What the table needs of :class:`~mlxnb._audit.store.AuditStore`."""

    def write(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class SavedConversation:
    """One saved conversation, as stored.

    Attributes:
        conversation_id: Its id (``Conversation.conversation_id``).
        title: The first user message, shortened.
        model: The model that answered last.
        source: ``python`` or ``widget``.
        messages: The OpenAI-style history.
        turn_summaries: Per chat turn: ``finish_reason``, ``error``, ``seconds``,
            ``thinking_seconds``.
        transcript: The chat widget's transcript entries (empty when not saved by a widget).
        created_at: When it was first saved (UTC text); set by the store.
        updated_at: When it was last saved (UTC text); set by the store.
    """

    conversation_id: str
    title: str
    model: str
    source: str
    messages: list[dict[str, Any]]
    turn_summaries: list[dict[str, Any]]
    transcript: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""


class ConversationStore:
    """Saved conversations in the audit store's file; thread-safe.

    Args:
        store: The audit store whose file holds the table.
        enabled: ``False`` (a log with ``log_content=False``): :meth:`save` stores nothing.
    """

    def __init__(self, store: Rows, *, enabled: bool = True) -> None:
        self._store = store
        self.enabled = enabled

    def save(self, saved: SavedConversation) -> bool:
        """Write (or replace) one conversation and commit before returning.

        Returns:
            Whether it was written (``False`` when content logging is off).
        """
        if not self.enabled:
            return False
        now = format_time(datetime.now(timezone.utc))
        values = (
            saved.conversation_id,
            saved.title,
            saved.model,
            saved.source,
            len(saved.turn_summaries),
            now,
            now,
            json.dumps(saved.messages, ensure_ascii=False, default=str),
            json.dumps(saved.turn_summaries, ensure_ascii=False, default=str),
            json.dumps(saved.transcript, ensure_ascii=False, default=str),
        )
        updated = ", ".join(
            f"{name} = excluded.{name}" for name in _COLUMNS[1:] if name != "created_at"
        )
        marks = ", ".join("?" * len(_COLUMNS))
        self._store.write(
            f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({marks}) "
            f"ON CONFLICT(conversation_id) DO UPDATE SET {updated}",
            values,
        )
        return True

    def get(self, conversation_id: str) -> SavedConversation | None:
        """The saved conversation with this id, or ``None``."""
        rows = self._store.query(
            f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE conversation_id = ?",
            (conversation_id,),
        )
        if not rows:
            return None
        row = dict(zip(_COLUMNS, rows[0], strict=True))
        return SavedConversation(
            conversation_id=row["conversation_id"],
            title=row["title"],
            model=row["model"],
            source=row["source"],
            messages=json.loads(row["messages"]),
            turn_summaries=json.loads(row["turn_summaries"]),
            transcript=json.loads(row["transcript"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def recent(self, limit: int | None = 20) -> list[dict[str, Any]]:
        """The newest conversations first: id, title, model, source, turns and times."""
        sql = f"SELECT {', '.join(_LISTED)} FROM {TABLE} ORDER BY updated_at DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [dict(zip(_LISTED, row, strict=True)) for row in self._store.query(sql)]

    def frame(self, limit: int | None = 20) -> pd.DataFrame:
        """:meth:`recent` as a DataFrame (times as ``datetime64[ns, UTC]``)."""
        import pandas as pd

        frame = pd.DataFrame(self.recent(limit), columns=list(_LISTED))
        for column in ("created_at", "updated_at"):
            stamps = pd.to_datetime(frame[column], utc=True, format="ISO8601")
            frame[column] = stamps.astype("datetime64[ns, UTC]")
        frame["turns"] = frame["turns"].astype("Int64")
        renamed: pd.DataFrame = frame.rename(columns={"conversation_id": "id"})
        return renamed
