"""Crash safety and concurrency of the audit store: SIGKILL, threads, several processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from audit_helpers import MakeRecord, MakeTurn, child_env

from mlxnb._audit import AuditLog

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from mlxnb._audit import AuditLog, TurnRecord
    from mlxnb._ids import new_request_id
    from mlxnb.events import Turn, Usage

    path, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    log = AuditLog(path)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(2)
    turn = Turn("answer " * 40, "thinking " * 20, (), (), "stop", Usage(50, 20, 0, 0.1, 9.0, 8.0))
    for i in range(count):
        record = TurnRecord.from_turn(
            turn, request_id=new_request_id(), source="python", model=tag,
            started_at=datetime.now(timezone.utc), duration_s=0.01, run_id=str(i),
        )
        log.append(record)
        print(record.request_id, flush=True)
    log.close()
    print("done", flush=True)
    """
)


def start_writer(path: Path, count: int, tag: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(count), tag],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def go(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as con:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.mark.parametrize("kill_after", [1, 250, 1500])
def test_every_returned_append_survives_sigkill(db_path: Path, kill_after: int) -> None:
    child = start_writer(db_path, 1_000_000, "killed")
    with child:  # closes its pipes and reaps it, whatever happens
        go(child)
        assert child.stdout is not None
        acknowledged: list[str] = []
        while len(acknowledged) < kill_after:
            line = child.stdout.readline()
            assert line, "writer ended early"
            acknowledged.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)  # mid-loop: it is appending as fast as it can
        acknowledged += [line.strip() for line in child.stdout]  # printed before the kill
        assert child.wait(timeout=30) == -signal.SIGKILL
    assert "done" not in acknowledged

    assert integrity(db_path) == "ok"
    with AuditLog(db_path) as reopened:
        stored = list(reopened.df["request_id"])
    # Every acknowledged append is there, in order; at most one more made it without its ack.
    assert stored[: len(acknowledged)] == acknowledged
    assert len(stored) - len(acknowledged) in (0, 1)


def test_threads_append_concurrently(
    log: AuditLog, db_path: Path, make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    threads_n, per_thread = 8, 500
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                log.append(make_record(make_turn(f"{t}:{i}"), source=f"thread-{t}"))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    frame = log.df
    assert len(log) == len(frame) == threads_n * per_thread
    assert frame["request_id"].is_unique
    assert set(frame["content"]) == {
        f"{t}:{i}" for t in range(threads_n) for i in range(per_thread)
    }
    # each thread's rows kept their order
    for t in range(threads_n):
        mine = frame.loc[frame["source"] == f"thread-{t}", "content"]
        assert list(mine) == [f"{t}:{i}" for i in range(per_thread)]
    assert integrity(db_path) == "ok"


def test_processes_and_threads_share_one_file(
    db_path: Path, make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    per_child = 1000
    # Both children create the (missing) file at the same time, then append together.
    children = [start_writer(db_path, per_child, f"proc-{n}") for n in range(2)]
    for child in children:
        go(child)
    with AuditLog(db_path) as here:
        for i in range(200):
            here.append(make_record(make_turn(str(i)), model="parent"))
        outputs = [child.communicate(timeout=120)[0].split() for child in children]
        assert [child.returncode for child in children] == [0, 0]
        assert all(out[-1] == "done" for out in outputs)

        frame = here.df  # the parent's cache must notice rows other processes wrote
        assert len(frame) == len(here) == 2 * per_child + 200
        assert frame["request_id"].is_unique
        for n, out in enumerate(outputs):
            rows = frame.loc[frame["model"] == f"proc-{n}"]
            assert list(rows["request_id"]) == out[:-1]
            assert list(rows["run_id"]) == [str(i) for i in range(per_child)]
    assert integrity(db_path) == "ok"


def test_another_process_sees_rows_and_later_appends(
    db_path: Path, make_record: MakeRecord
) -> None:
    with AuditLog(db_path) as here:
        mine = make_record(model="before")
        here.append(mine)
        assert len(here.df) == 1  # cached now
        child = start_writer(db_path, 3, "other")
        go(child)
        out = child.communicate(timeout=60)[0].split()
        assert child.returncode == 0
        deadline = time.monotonic() + 5
        while len(here.df) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(here.df["request_id"]) == [mine.request_id, *out[:-1]]
        # and a pruned row disappears from this process's view too
        with AuditLog(db_path) as other:
            assert other.prune(mine.started_at + timedelta(microseconds=1)) == 1
        assert list(here.df["request_id"]) == out[:-1]


def checkpoint_threads() -> int:
    return sum(t.name == "mlxnb-audit-checkpoint" for t in threading.enumerate())


def test_wal_is_checkpointed_off_the_append_path(
    db_path: Path, make_record: MakeRecord, make_turn: MakeTurn
) -> None:
    threads_before = checkpoint_threads()
    log = AuditLog(db_path)
    for i in range(600):
        log.append(make_record(make_turn(f"{i} " + "x" * 1000)))
    # The rows reach the main database file while the log is open and idle: only a
    # checkpoint copies them there (the writer's own would wait for ~40 MB of WAL).
    deadline = time.monotonic() + 10
    while db_path.stat().st_size < 500_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db_path.stat().st_size >= 500_000
    assert checkpoint_threads() == threads_before + 1
    log.close()
    assert checkpoint_threads() == threads_before
    assert integrity(db_path) == "ok"
    with AuditLog(db_path) as reopened:
        assert len(reopened) == 600
