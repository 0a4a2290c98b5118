"""The audit log: every turn from every front door as one durable row.

:class:`AuditLog` appends :class:`TurnRecord` rows to an SQLite file (see
:mod:`mlxnb._audit.store` for why SQLite in WAL mode, and what "durable" means) and reads them
back as a pandas DataFrame with explicit dtypes, built on demand and cached until the rows change.
Several kernels may share one file.

Example::

    audit = AuditLog()                       # $MLXNB_AUDIT or the per-user data folder
    audit.df.tail()                          # all turns, typed
    audit.summary()                          # latency and speed per model and source
    audit.export("turns.parquet")            # or .csv / .jsonl; read back with read_export()
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from mlxnb._audit import view as _view
from mlxnb._audit.conversations import ConversationStore
from mlxnb._audit.frame import (
    FrameBuilder,
    frame_from_rows,
    gc_paused,
    read_export,
    records_from_frame,
    summarize,
    write_export,
)
from mlxnb._audit.record import (
    SCHEMA_VERSION,
    TurnRecord,
    format_time,
)
from mlxnb._audit.redaction import stored_row
from mlxnb._audit.store import TABLE, AuditStore, Snapshot
from mlxnb._paths import user_data_dir
from mlxnb.errors import AuditError, InvalidRequestError

__all__ = [
    "SCHEMA_VERSION",
    "AuditLog",
    "TurnRecord",
    "default_path",
    "read_export",
]

_log = logging.getLogger(__name__)
_CACHED_FRAMES = 4
Filter = str | Iterable[str] | None
Since = datetime | timedelta | str | None


def default_path() -> Path | None:
    """Where :class:`AuditLog` keeps its file when no path is given.

    ``$MLXNB_AUDIT`` when set (``:memory:`` for no file); otherwise ``audit.sqlite3`` in the
    per-user data folder: ``~/Library/Application Support/mlxnb`` on macOS,
    ``$XDG_DATA_HOME/mlxnb`` (default ``~/.local/share/mlxnb``) elsewhere.

    Returns:
        The file path, or ``None`` for an in-memory log.
    """
    configured = os.environ.get("MLXNB_AUDIT")
    if configured:
        return None if configured == ":memory:" else Path(configured).expanduser()
    return user_data_dir() / "audit.sqlite3"


def _in(column: str, values: Filter) -> tuple[str, list[Any]]:
    chosen = [values] if isinstance(values, str) else list(values or ())
    return f"{column} IN ({', '.join('?' * len(chosen))})", chosen


#: pandas 3 always copies on write: a shallow copy is then as private as a deep one, and free.
_COPIES_ON_WRITE = int(pd.__version__.split(".", 1)[0]) >= 3


def private_copy(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` the caller may change without changing ``frame`` (the cache's).

    Under Copy-on-Write a shallow copy shares the columns until either side writes to one; a
    deep copy of a 100 000-row frame writes ~50 MB of memory the process has not touched yet.
    """
    copied: pd.DataFrame = frame.copy(deep=not _COPIES_ON_WRITE)
    return copied


def _cutoff(moment: datetime | timedelta | str) -> str:
    """The stored text of a point in time; naive datetimes and text are taken as UTC."""
    if isinstance(moment, timedelta):
        return format_time(datetime.now(timezone.utc) - moment)
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return format_time(stamp.to_pydatetime())


@dataclass(frozen=True)
class _CachedFrame:
    """A frame read for one filter, the store's snapshot it came from, the log's version."""

    frame: pd.DataFrame
    snapshot: Snapshot
    version: tuple[int, int]


class AuditLog:
    """One durable row per finished turn, readable as a pandas DataFrame.

    Args:
        path: SQLite file (created if missing); ``None`` for :func:`default_path`;
            ``":memory:"`` for a log that lives only in this process.
        log_content: ``False`` stores metadata only: content and reasoning blanked, tool-call
            arguments withheld (``null``; names kept). Image counts and summaries (hashes,
            formats, sizes) are metadata and kept. Chat histories are not saved at all (no
            ``resume=``).
        max_text_chars: Longer text fields are cut to this length (with a marker saying so;
            tool calls and image summaries lose whole entries from the end instead).
        durable: ``False`` for an in-memory log (``path`` must then be ``None``).

    Raises:
        ValueError: Bad arguments, or ``path`` is not an audit database this mlxnb can read.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        log_content: bool = True,
        max_text_chars: int = 100_000,
        durable: bool = True,
    ) -> None:
        if max_text_chars < 1:
            raise InvalidRequestError("max_text_chars must be at least 1")
        target: Path | None
        if not durable:
            if path not in (None, ":memory:"):
                raise InvalidRequestError(
                    "durable=False keeps the log in memory: do not pass a path"
                )
            target = None
        elif path is None:
            target = default_path()
        else:
            target = None if str(path) == ":memory:" else Path(path).expanduser()
        self._store = AuditStore(target)
        self.log_content = log_content
        self.saved_conversations = ConversationStore(self._store, enabled=log_content)
        self.max_text_chars = max_text_chars
        self._closed = False
        self._cache_lock = threading.Lock()
        self._cache_version: tuple[int, int] | None = None
        self._frames: dict[tuple[str, tuple[Any, ...]], _CachedFrame] = {}
        self._count: int | None = None
        self._listeners: list[Callable[[TurnRecord], None]] = []

    @property
    def path(self) -> Path | None:
        """The SQLite file, or ``None`` for an in-memory log."""
        return self._store.path

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def append(self, record: TurnRecord) -> None:
        """Store one finished turn; when this returns the row survives a kill of the process.

        Thread-safe. Applies ``log_content`` and ``max_text_chars``.

        Raises:
            ValueError: The log is closed.
        """
        if self._closed:
            raise AuditError("append to a closed AuditLog")
        self._store.insert(stored_row(record, self.log_content, self.max_text_chars))
        for listener in tuple(self._listeners):
            try:
                listener(record)
            except Exception:  # a broken view must never fail the turn being recorded
                _log.exception("audit log listener failed")

    def subscribe(self, listener: Callable[[TurnRecord], None]) -> Callable[[], None]:
        """Call ``listener(record)`` after each append in this process.

        Returns:
            A function that unsubscribes (idempotent).
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _check_cache(self) -> tuple[int, int]:
        if self._closed:
            raise AuditError("read from a closed AuditLog")
        version = self._store.version()
        with self._cache_lock:
            if version != self._cache_version:
                # Frames stay: the next read of each adds only the rows appended since.
                self._count = None
                self._cache_version = version
        return version

    def to_pandas(
        self,
        since: Since = None,
        source: Filter = None,
        model: Filter = None,
        status: Filter = None,
    ) -> pd.DataFrame:
        """The rows as a DataFrame, oldest append first, read from the store.

        Dtypes: ``started_at`` is ``datetime64[ns, UTC]``; counts ``Int64``; durations and
        speeds ``Float64``; text ``string``. Frames are cached per filter; after appends (here or
        in any other process) a call reads only the rows appended since, after a prune or any
        other change it reads them all again; each call returns a copy.

        Args:
            since: Keep turns started at or after this (a timedelta means "this long ago";
                naive datetimes and text are UTC).
            source: Keep these sources (one or several).
            model: Keep these models.
            status: Keep these statuses (``ok``, ``cancelled``, ``error``).
        """
        conditions: list[str] = []
        params: list[Any] = []
        if since is not None:
            conditions.append("started_at >= ?")
            params.append(_cutoff(since))
        for column, chosen in (("source", source), ("model", model), ("status", status)):
            if chosen is not None:
                condition, values = _in(column, chosen)
                conditions.append(condition)
                params.extend(values)
        where = " AND ".join(conditions)
        key = (where, tuple(params))
        version = self._check_cache()
        with self._cache_lock:
            cached = self._frames.get(key)
        if cached is not None and cached.version == version:
            return private_copy(cached.frame)
        frame, snapshot = self._read(where, params, cached)
        # A relative "since" names a new cutoff on every call: never reused, so not kept.
        if not isinstance(since, timedelta):
            with self._cache_lock:
                if self._cache_version == version:
                    self._frames.pop(key, None)
                    if len(self._frames) >= _CACHED_FRAMES:
                        self._frames.pop(next(iter(self._frames)))
                    self._frames[key] = _CachedFrame(frame, snapshot, version)
                    return private_copy(frame)
        # Not kept: still the caller's own, unless nothing was appended to the cached one.
        return private_copy(frame) if cached is not None and frame is cached.frame else frame

    def _read(
        self, where: str, params: Sequence[Any], cached: _CachedFrame | None
    ) -> tuple[pd.DataFrame, Snapshot]:
        """The matching rows' frame: ``cached`` and the rows appended since, or all of them."""
        with gc_paused():
            if cached is not None:
                builder = FrameBuilder()
                after = cached.snapshot
                snapshot = self._store.select_batches(builder.add_rows, where, params, after=after)
                if snapshot is not None:
                    added = builder.build()
                    if added.empty:
                        return cached.frame, snapshot
                    return pd.concat([cached.frame, added], ignore_index=True), snapshot
            builder = FrameBuilder()
            snapshot = self._store.select_batches(builder.add_rows, where, params)
            assert snapshot is not None  # only a read ``after`` a snapshot can come back empty
            return builder.build(), snapshot

    @property
    def df(self) -> pd.DataFrame:
        """All rows as a DataFrame (``to_pandas()``)."""
        return self.to_pandas()

    def tail(self, n: int = 5) -> pd.DataFrame:
        """The last ``n`` appended rows as a DataFrame (read without loading the rest)."""
        self._check_cache()
        return frame_from_rows(self._store.select(tail=n))

    def totals(self) -> dict[str, int]:
        """Counts over all rows: turns, errors, cancelled, prompt and completion tokens."""
        self._check_cache()
        turns, errors, cancelled, prompt, completion = self._store.query(
            "SELECT count(*), total(status = 'error'), total(status = 'cancelled'), "
            f"total(prompt_tokens), total(completion_tokens) FROM {TABLE}"
        )[0]
        return {
            "turns": int(turns),
            "errors": int(errors),
            "cancelled": int(cancelled),
            "prompt_tokens": int(prompt),
            "completion_tokens": int(completion),
        }

    def __bool__(self) -> bool:
        # An empty log is still a log: keep ``audit or default`` from discarding it.
        return True

    def __len__(self) -> int:
        version = self._check_cache()
        with self._cache_lock:
            count = self._count
        if count is None:
            count = int(self._store.query(f"SELECT count(*) FROM {TABLE}")[0][0])
            with self._cache_lock:
                if self._cache_version == version:
                    self._count = count
        return count

    def __iter__(self) -> Iterator[TurnRecord]:
        self._check_cache()
        for row in self._store.iter_rows():
            yield TurnRecord.from_row(row)

    def get(self, request_id: str) -> TurnRecord | None:
        """The row with this request id, or ``None``."""
        self._check_cache()
        rows = self._store.select("request_id = ?", (request_id,))
        return TurnRecord.from_row(rows[0]) if rows else None

    def conversations(self, limit: int | None = 20) -> pd.DataFrame:
        """Saved chat histories, newest first (``resume=`` one by its ``id``).

        Columns: id, title (the first message), model, source, turns, created_at, updated_at.
        """
        self._check_cache()
        return self.saved_conversations.frame(limit)

    def summary(self, by: str | Sequence[str] = ("model", "source")) -> pd.DataFrame:
        """Latency, speed and outcome per group of turns.

        Columns: turns, errors, cancelled, p50/p95 duration, p50 time to first token, mean
        tokens/s (generation and prompt), prompt and completion token totals.

        Args:
            by: Column(s) to group by; ``()`` for a single row over all turns.
        """
        return summarize(self.to_pandas(), [by] if isinstance(by, str) else list(by))

    def export(self, path: str | Path) -> Path:
        """Write all rows to ``.parquet``, ``.csv`` or ``.jsonl`` (by suffix), atomically.

        Read it back with :func:`read_export` (same dtypes) or :meth:`import_file`.

        Returns:
            The path written.
        """
        self._check_cache()
        return write_export(Path(path), self.to_pandas, self._store.iter_rows)

    def import_file(self, path: str | Path) -> int:
        """Append the rows of an export whose request ids this log does not hold yet.

        ``log_content`` and ``max_text_chars`` apply. All rows go in one transaction.

        Returns:
            How many rows were added.
        """
        self._check_cache()
        known = {row[0] for row in self._store.query(f"SELECT request_id FROM {TABLE}")}
        rows: list[tuple[Any, ...]] = []
        for record in records_from_frame(read_export(path)):
            if record.request_id not in known:
                known.add(record.request_id)
                rows.append(stored_row(record, self.log_content, self.max_text_chars))
        return self._store.insert_many(rows) if rows else 0

    def prune(self, older_than: timedelta | datetime) -> int:
        """Delete turns that started before a point in time.

        Args:
            older_than: A datetime (naive means UTC), or a timedelta counted back from now.

        Returns:
            How many rows were deleted.
        """
        self._check_cache()
        return self._store.delete_before(_cutoff(older_than))

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "in memory"

    def _view(self, rows: int) -> tuple[str, pd.DataFrame | None]:
        if self._closed:
            return _view.closed_line(self._where()), None
        return _view.totals_line(self._where(), self.totals()), self.tail(rows) if len(
            self
        ) else None

    def live(self, rows: int = 10, interval: float = 0.5) -> Any:
        """An ``ipywidgets.HTML`` of the last rows and totals that refreshes after appends.

        Rows that other processes append show up with the next refresh.

        Raises:
            DependencyError: ipywidgets is not installed.
        """
        return _view.live(
            lambda: _view.as_html(*self._view(rows)), self.subscribe, lambda: self.closed, interval
        )

    def __repr__(self) -> str:
        return _view.as_text(*self._view(5))

    def _repr_html_(self) -> str:
        return _view.as_html(*self._view(5))

    def close(self) -> None:
        """Close the store (idempotent). Rows already appended stay on disk."""
        if not self._closed:
            self._closed = True
            self._listeners.clear()
            self._store.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
