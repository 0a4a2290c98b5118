"""Audit log throughput: durable appends, DataFrame build, exports.

Usage: python -m bench.bench_audit [--rows 100000] [--dir DIR] [--json PATH]

Rows look like real chat turns: a 300-character answer, some reasoning, a tool call on every
tenth turn, an error on every fiftieth.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench.report import add_json_argument, figure, human_output, new_report, write_report
from mlxnb._audit import AuditLog, TurnRecord, read_export
from mlxnb._ids import new_request_id
from mlxnb.events import ToolCall, Turn, Usage

T = TypeVar("T")
TARGETS = {"append (durable)": 2.0, "to_pandas": 1.0}


def make_records(n: int) -> list[TurnRecord]:
    start = datetime.now(timezone.utc) - timedelta(days=1)
    ok = Turn("The answer is 42. " * 17, "Let me think. " * 8, (), (), "stop", Usage(120, 80))
    call = ToolCall(0, "call_0", "search", {"query": "mlx audit", "limit": 5})
    tool = Turn("", "Need a tool.", (call,), (), "tool_calls", Usage(140, 30))
    failed = Turn("", "", (), (), "error", Usage(90, 0), error="worker failed")
    records = []
    for i in range(n):
        turn = failed if i % 50 == 49 else tool if i % 10 == 9 else ok
        usage = turn.usage
        turn = Turn(
            turn.content,
            turn.reasoning,
            turn.tool_calls,
            (),
            turn.finish_reason,
            Usage(usage.prompt_tokens, usage.completion_tokens, 0, 0.05, 900.0, 40.0 + i % 7),
            turn.error,
        )
        records.append(
            TurnRecord.from_turn(
                turn,
                request_id=new_request_id(),
                source=("python", "server", "eval", "widget")[i % 4],
                model=("qwen3-0.6b", "smollm2")[i % 2],
                started_at=start + timedelta(milliseconds=i),
                duration_s=0.5 + (i % 100) / 100,
                conversation_id=f"conv-{i // 8}",
                endpoint="/v1/chat/completions" if i % 4 == 1 else None,
                run_id="run-1" if i % 4 == 2 else None,
                error_type="GenerationError" if turn.finish_reason == "error" else None,
            )
        )
    return records


def timed(
    label: str, results: list[tuple[str, float, str]], fn: Callable[[], T], note: str = ""
) -> T:
    begin = time.perf_counter()
    value = fn()
    results.append((label, time.perf_counter() - begin, note))
    return value


def append_all(log: AuditLog, records: list[TurnRecord]) -> None:
    for record in records:
        log.append(record)


def measure(n: int, directory: Path | None) -> tuple[list[tuple[str, float, str]], list[float]]:
    """Time every operation on ``n`` rows: (label, seconds, note) rows, sorted append µs."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        folder = Path(tmp)
        results: list[tuple[str, float, str]] = []
        records = timed("build TurnRecords", results, lambda: make_records(n))
        log = AuditLog(folder / "audit.sqlite3")
        per_append: list[float] = []
        clock = time.perf_counter
        begin = clock()
        for record in records:
            t0 = clock()
            log.append(record)
            per_append.append(clock() - t0)
        total = clock() - begin
        us = sorted(x * 1e6 for x in per_append)
        note = (
            f"mean {statistics.fmean(us):.1f} us, p50 {us[len(us) // 2]:.1f} us, "
            f"p99 {us[int(len(us) * 0.99)]:.1f} us, max {us[-1] / 1000:.1f} ms"
        )
        results.append(("append (durable)", total, note))
        memory = AuditLog(":memory:")
        timed("append (in memory)", results, lambda: append_all(memory, records))
        memory.close()
        frame = timed("to_pandas", results, log.to_pandas, "cold: read + typed columns")
        timed("to_pandas (cached)", results, log.to_pandas, "copy of the cached frame")
        fresh = AuditLog(folder / "audit.sqlite3")
        timed("to_pandas (new instance)", results, fresh.to_pandas, "another reader")
        fresh.close()
        timed("to_pandas(source='eval')", results, lambda: log.to_pandas(source="eval"))
        timed("summary()", results, log.summary)
        timed("len()", results, lambda: len(log))
        for suffix in ("parquet", "csv", "jsonl"):
            path = folder / f"export.{suffix}"
            timed(f"export .{suffix}", results, partial(log.export, path))
            back = timed(f"read_export .{suffix}", results, partial(read_export, path))
            assert back.equals(frame), suffix
        append_all(log, make_records(10))
        timed(
            "to_pandas after 10 appends",
            results,
            log.to_pandas,
            "the 10 rows read, added to the cached frame",
        )
        log.close()
    return results, us


def print_table(n: int, results: list[tuple[str, float, str]]) -> None:
    """The human-readable table: one row per operation, with its target where there is one."""
    print(f"audit log benchmark, {n:,} rows")
    print(f"{'operation':<28} {'seconds':>9} {'target':>7}  notes")
    print("-" * 100)
    for label, seconds, note in results:
        target = TARGETS.get(label)
        mark = (
            "" if target is None else f"{target:>5.1f}s " + ("ok" if seconds <= target else "MISS")
        )
        print(f"{label:<28} {seconds:>9.3f} {mark:>10}  {note}")


def to_results(results: list[tuple[str, float, str]], append_us: list[float]) -> dict[str, Any]:
    """The timed rows and append-latency percentiles, for ``--json``.

    Each operation runs once, so each figure has ``n == 1``; the per-append latencies are kept
    as percentiles only (one value per row would be megabytes).
    """
    us = sorted(append_us)
    latency = {
        "mean": statistics.fmean(us),
        "p50": us[len(us) // 2],
        "p90": us[int(len(us) * 0.9)],
        "p99": us[int(len(us) * 0.99)],
        "max": us[-1],
    }
    figures = {
        label: figure(
            label,
            [seconds],
            unit="s",
            target=None if label not in TARGETS else f"<= {TARGETS[label]}",
        )
        for label, seconds, _ in results
    }
    for name in ("p50", "p99"):
        figures[f"append latency {name}"] = figure(
            f"durable append latency {name}", [latency[name]], unit="us"
        )
    return {
        "runs": [{"operation": label, "seconds": s, "note": note} for label, s, note in results],
        "append_latency_us": latency,
        "figures": figures,
    }


def cold_read(path: str, deep_copies: bool) -> None:
    """Print the seconds of one cold ``to_pandas()`` (run in a fresh process by :func:`cold_pairs`).

    ``deep_copies`` times the code before 2026-12-03, which deep-copied a new frame into the
    cache and every cached frame out of it.
    """
    import mlxnb._audit.log as log_module

    if deep_copies:
        log_module.private_copy = lambda frame: frame.copy(deep=True)
    log = AuditLog(path)
    begin = time.perf_counter()
    log.to_pandas()
    print(time.perf_counter() - begin)
    log.close()


def cold_pairs(n: int, pairs: int, directory: Path | None) -> dict[str, Any]:
    """Cold ``to_pandas()`` in fresh processes, this code and the deep copies alternating."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = str(Path(tmp) / "audit.sqlite3")
        log = AuditLog(path)
        append_all(log, make_records(n))
        log.close()
        seconds: dict[bool, list[float]] = {False: [], True: []}
        for index in range(pairs + 1):  # the first pair warms the page cache, not counted
            for deep in (False, True) if index % 2 else (True, False):
                code = f"from bench.bench_audit import cold_read; cold_read({path!r}, {deep})"
                out = subprocess.run(
                    [sys.executable, "-c", code], check=True, capture_output=True, text=True
                ).stdout
                if index:
                    seconds[deep].append(float(out.split()[-1]))
    new, old = seconds[False], seconds[True]
    ratios = [a / b for a, b in zip(new, old, strict=True)]
    print(
        f"cold to_pandas, fresh processes ({pairs} pairs): now {statistics.median(new):.3f} s, "
        f"deep copies {statistics.median(old):.3f} s, ratio {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}, {max(ratios):.2f}]"
    )
    return {
        "runs": [{"now_s": a, "deep_copies_s": b} for a, b in zip(new, old, strict=True)],
        "figures": {
            "to_pandas_cold_s": figure("to_pandas, cold, fresh process", new, unit="s"),
            "to_pandas_cold_deep_copies_s": figure(
                "to_pandas with deep copies (before 2026-12-03)", old, unit="s"
            ),
            "to_pandas_cold_ratio": figure("now / deep copies", ratios, unit="x"),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="only time cold to_pandas() in fresh processes, against deep copies, this many pairs",
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("audit", args)
    if args.pairs:
        with human_output(args.json):
            pairs = cold_pairs(args.rows, args.pairs, args.dir)
        write_report(report, pairs, args.json)
        return
    with human_output(args.json):
        results, append_us = measure(args.rows, args.dir)
        print_table(args.rows, results)
    write_report(report, to_results(results, append_us), args.json)


if __name__ == "__main__":
    main()
