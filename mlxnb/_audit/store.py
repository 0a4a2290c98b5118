"""The audit log's durable store: one SQLite file in WAL mode, one row per turn.

Why SQLite in WAL mode with ``synchronous=NORMAL`` and a commit per row:

* **Crash safety.** ``append`` returns after its own ``COMMIT``. In WAL mode a commit is a
  ``write()`` of the row's pages to the ``-wal`` file, so it lives in the OS page cache the
  moment ``append`` returns: killing the process (SIGKILL, a dead kernel) loses nothing, and the
  next opener replays the WAL. What ``NORMAL`` gives up, against ``FULL``, is an ``fsync`` per
  commit: after an OS crash or power loss the last commits may roll back, but the file is never
  corrupt (the WAL is synced before every checkpoint). ``OFF`` was measured about 40% faster but
  can corrupt the file on power loss, so it is not used.
* **Several kernels on one file.** WAL lets any number of processes read while one writes; writers
  queue on SQLite's lock (busy timeout), each row is one atomic transaction, and no process ever
  sees a torn row. An append-only JSONL file would need its own locking, a reader that tolerates a
  torn last line, a full rewrite for retention and a full parse for every query.
* **Speed.** A durable append costs about 16 us (median) on the 2-core Linux VM it was
  measured on (``bench/bench_audit.py``). WAL checkpoints (which sync the files) run on a
  background thread, PASSIVE, every 256 appends: inline, they stalled one append in ~300 by
  milliseconds and cost ~20% of the total; the writer only checkpoints itself if the WAL passes
  ~40 MB. The table keeps no secondary index: a ``UNIQUE`` index on ``request_id`` cost a
  further ~7 us per row (a second B-tree page per commit); request ids are unique by
  construction (48-bit time, 12-bit counter, 62 random bits). Batching commits behind ``append``
  would make "append returned" weaker than "durable against a kill", so it is not done.

**Schema versions.** ``PRAGMA user_version`` holds the file's :data:`SCHEMA_VERSION`. Opening a
file from an older mlxnb brings it up to date in place: the columns added since (each
:class:`~mlxnb._audit.record.Column` names its version and default) are added with ``ALTER
TABLE ... ADD COLUMN``, so old rows read as the defaults, and the version is raised, all in one
``BEGIN IMMEDIATE`` transaction (version 6 added a table instead: ``conversations``, the
saved chat histories of :mod:`mlxnb._audit.conversations`). The version is read inside that
transaction, under the write lock: when several kernels open an old file at once, the first
migrates and the others, queued on the lock, find the new version and do nothing. A crash
mid-way rolls back to the old file. An older mlxnb still running on a migrated file keeps
appending (it names its columns, the new ones take their defaults); one started afterwards
refuses it, as every mlxnb refuses a newer file.

Each :class:`AuditStore` holds a writer connection and, for files, a separate reader connection,
so that building a large DataFrame never blocks an append from the engine's worker thread. WAL needs
a local file system (not NFS/SMB): the ``-shm`` index is shared memory.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxnb._audit.conversations import create_table as create_conversations
from mlxnb._audit.record import COLUMN_NAMES, COLUMNS, SCHEMA_VERSION
from mlxnb.errors import AuditError

TABLE = "turns"
BUSY_TIMEOUT_S = 30.0
CHECKPOINT_EVERY = 256
"""Appends between two background checkpoints."""
BACKSTOP_PAGES = 10_000
"""WAL pages after which the writer checkpoints itself (the background thread fell behind)."""
_log = logging.getLogger(__name__)
_SELECT = f"SELECT {', '.join(COLUMN_NAMES)} FROM {TABLE}"
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)


def _connect(target: str) -> sqlite3.Connection:
    # isolation_level=None: every statement outside BEGIN is its own committed transaction.
    con = sqlite3.connect(
        target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        con.execute("PRAGMA synchronous=NORMAL")
        if target != ":memory:":
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        con.close()
        raise AuditError(f"{target} is not an SQLite audit database: {exc}") from exc
    return con


class _Checkpointer:
    """Copies WAL pages into the database on its own thread and connection.

    A checkpoint syncs the WAL and the database file; done inline by the writer (SQLite's
    default) it stalls one append in a few hundred by milliseconds. PASSIVE checkpoints never
    block writers, and the commits themselves are unchanged, so durability is the same.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """Ask for a checkpoint soon (starts the thread the first time)."""
        with self._lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="mlxnb-audit-checkpoint", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        con = _connect(str(self._path))
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # the writer's backstop checkpoint still bounds the WAL
                    _log.debug("background audit checkpoint failed", exc_info=True)
        finally:
            con.close()

    def stop(self) -> None:
        """Stop the thread and wait for it (idempotent)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=30)


@dataclass(frozen=True)
class Snapshot:
    """What a read saw: the last rowid, how many rows there were, the last row's request id.

    A later read that finds the same up to ``rowid`` knows that no row it held was pruned and
    none was deleted and appended again in its place, so it may read only the rows after it.
    """

    rowid: int
    held: int
    last_request_id: str | None


class AuditStore:
    """SQLite storage of audit rows (tuples in :data:`COLUMN_NAMES` order); thread-safe.

    Args:
        path: The database file (created with its parent folders), or ``None`` for memory.

    Opening a file written by an older mlxnb migrates it to :data:`SCHEMA_VERSION` (see the
    module docstring).

    Raises:
        ValueError: The file is not an mlxnb audit database, or one from a newer mlxnb.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.appends = 0
        self._write_lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        if path is None:
            self._writer = _connect(":memory:")
            self._reader, self._read_lock = self._writer, self._write_lock
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = _connect(str(path))
        try:
            self._init_schema()
        except BaseException:
            self._writer.close()
            raise
        if path is not None:
            self._writer.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self._checkpointer = _Checkpointer(path)
            self._reader, self._read_lock = _connect(str(path)), threading.Lock()
            self._reader.execute("PRAGMA query_only=ON")

    def _init_schema(self) -> None:
        con = self._writer
        # IMMEDIATE takes the write lock first, so two kernels creating one file do not race.
        con.execute("BEGIN IMMEDIATE")
        try:
            # Read under the write lock: another process's migration has committed or not begun.
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                body = ", ".join(column.sql for column in COLUMNS)
                con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({body})")
                create_conversations(con)
                con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise AuditError(
                    f"audit database {self.path} has schema version {version}; this mlxnb "
                    f"reads up to {SCHEMA_VERSION}: upgrade mlxnb or use another file"
                )
            elif version < SCHEMA_VERSION:
                self._migrate(version)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _migrate(self, version: int) -> None:
        """Bring a file of an older schema ``version`` up to date (inside the open transaction)."""
        con = self._writer
        present = {row[1] for row in con.execute(f"PRAGMA table_info({TABLE})")}
        expected = [c.name for c in COLUMNS if c.since <= version]
        missing = [name for name in expected if name not in present]
        if missing:
            raise AuditError(
                f"audit database {self.path} has schema version {version} but lacks its "
                f"columns {missing}: it is not an mlxnb audit table"
            )
        for column in COLUMNS:
            if column.since > version and column.name not in present:
                con.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column.sql}")
        create_conversations(con)  # version 6: saved chat histories
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        _log.info(
            "audit database %s migrated from schema version %d to %d",
            self.path,
            version,
            SCHEMA_VERSION,
        )

    def insert(self, row: Sequence[Any]) -> None:
        """Append one row and commit it before returning."""
        with self._write_lock:
            self._writer.execute(_INSERT, row)
            self.appends += 1
            appends = self.appends
        if self._checkpointer is not None and appends % CHECKPOINT_EVERY == 0:
            self._checkpointer.poke()

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one writing statement (its own committed transaction) on the writer."""
        with self._write_lock:
            self._writer.execute(sql, params)

    def insert_many(self, rows: Iterable[Sequence[Any]]) -> int:
        """Append rows in one transaction (all or none); returns how many."""
        with self._write_lock:
            con = self._writer
            con.execute("BEGIN IMMEDIATE")
            try:
                count = con.executemany(_INSERT, rows).rowcount
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self.appends += 1
        return max(count, 0)

    def delete_before(self, started_at: str) -> int:
        """Delete rows that started before ``started_at`` (stored text form); returns how many."""
        with self._write_lock:
            count = self._writer.execute(
                f"DELETE FROM {TABLE} WHERE started_at < ?", (started_at,)
            ).rowcount
            self.appends += 1
        return count

    def version(self) -> tuple[int, int]:
        """Changes whenever any connection, in any process, changed the rows."""
        with self._read_lock:
            data_version = self._reader.execute("PRAGMA data_version").fetchone()[0]
        return self.appends, int(data_version)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the reader connection."""
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    def select(
        self, where: str = "", params: Sequence[Any] = (), *, tail: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows in append order, optionally filtered (``where`` is an SQL condition).

        Args:
            where: SQL condition on the columns, or ``""`` for all rows.
            params: Parameters of ``where``.
            tail: Only the last ``tail`` rows.
        """
        sql = _SELECT + (f" WHERE {where}" if where else "")
        if tail is None:
            return self.query(sql + " ORDER BY rowid", params)
        rows = self.query(sql + f" ORDER BY rowid DESC LIMIT {int(tail)}", params)
        rows.reverse()
        return rows

    def select_batches(
        self,
        consume: Callable[[list[tuple[Any, ...]]], None],
        where: str = "",
        params: Sequence[Any] = (),
        *,
        after: Snapshot | None = None,
        batch: int = 8192,
    ) -> Snapshot | None:
        """Hand every matching row, in append order, to ``consume`` a batch at a time.

        One read transaction (a consistent snapshot) under the read lock. Batches keep only a
        batch of rows alive as Python objects at once: a whole-table ``fetchall`` makes millions
        of them, and on a fresh process (or a VM that hands freed memory back to its host) the
        memory they first touch costs more than reading the rows.

        Args:
            consume: Called with each batch of rows.
            where: SQL condition on the columns, or ``""`` for all rows.
            params: Parameters of ``where``.
            after: Only the rows appended since this snapshot, if the rows it held are all
                still there (rows are never changed in place, only appended or pruned).
            batch: Rows per batch.

        Returns:
            The snapshot read; ``None`` (nothing consumed) if rows ``after`` held are gone.
        """
        conditions = [f"({where})"] if where else []
        arguments = list(params)
        with self._read_lock:
            con = self._reader
            con.execute("BEGIN")
            try:
                if after is not None:
                    if self._snapshot(con, after.rowid) != after:
                        return None
                    conditions.insert(0, "rowid > ?")
                    arguments.insert(0, after.rowid)
                sql = _SELECT + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
                cursor = con.execute(sql + " ORDER BY rowid", arguments)
                try:
                    while rows := cursor.fetchmany(batch):
                        consume(rows)
                finally:
                    cursor.close()
                return self._snapshot(con)
            finally:
                con.execute("COMMIT")

    @staticmethod
    def _snapshot(con: sqlite3.Connection, upto: int | None = None) -> Snapshot:
        """The rows up to rowid ``upto`` (all rows: ``None``) as a :class:`Snapshot`."""
        bound = "" if upto is None else f" WHERE rowid <= {int(upto)}"
        rowid, held = con.execute(f"SELECT max(rowid), count(*) FROM {TABLE}{bound}").fetchone()
        last = con.execute(f"SELECT request_id FROM {TABLE} WHERE rowid = ?", (rowid,)).fetchone()
        return Snapshot(int(rowid or 0), int(held), None if last is None else str(last[0]))

    def iter_rows(self, batch: int = 1000) -> Iterator[tuple[Any, ...]]:
        """Rows in append order, read in batches (no lock is held between batches)."""
        last = 0
        while True:
            chunk = self.query(
                f"SELECT rowid, {', '.join(COLUMN_NAMES)} FROM {TABLE} "
                f"WHERE rowid > ? ORDER BY rowid LIMIT {int(batch)}",
                (last,),
            )
            for row in chunk:
                yield row[1:]
            if len(chunk) < batch:
                return
            last = chunk[-1][0]

    def close(self) -> None:
        """Close the connections (idempotent)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._write_lock:
            if self._reader is not self._writer:
                with self._read_lock:
                    self._reader.close()
            self._writer.close()
