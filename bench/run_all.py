"""Run every benchmark in turn (``make bench``) and write one results file.

Each bench prints its own table as before and writes its JSON report (``--json``) to a temporary
file; the reports are gathered into one file (default ``bench/results/latest.json``)::

    {"schema": 1, "started_at": ..., "finished_at": ..., "machine": {...}, "quick": false,
     "benches": [{"bench": "engine", "status": "ok", "exit_status": 0, "argv": [...],
                  "wall_s": ..., "settings": {...}, "results": {...}, ...}, ...]}

A bench that fails keeps its exit status (and the end of its stderr) in the file, and this
script then exits 1; one that cannot run here (e.g. no Chromium) is recorded as ``"skipped"``
with its reason. ``--quick`` runs every bench at its smallest settings, to check the plumbing.

    python -m bench.run_all [--quick] [--out bench/results/latest.json]
    python -m bench.summarize bench/results/latest.json   # the markdown table for the README
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from bench.report import REPO, SCHEMA, STDOUT, dump, machine_info, now_iso

DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"

# (module, full-run arguments, --quick arguments: the smallest settings each bench allows)
BENCHES: list[tuple[str, list[str], list[str]]] = [
    (
        "bench.bench_engine",
        ["--shape", "mid", "--tokens", "64"],
        ["--shape", "tiny", "--tokens", "8", "--streams", "2", "--repeats", "2"],
    ),
    (
        "bench.bench_overhead",
        ["--shape", "tiny", "--pairs", "12", "--direct-wakeups"],
        ["--shape", "tiny", "--tokens", "16", "--pairs", "2"],
    ),
    (
        "bench.bookkeeping",
        ["--tokens", "20000", "--repeats", "7"],
        ["--tokens", "200", "--repeats", "1"],
    ),
    (
        "bench.bench_submit",
        ["--shape", "tiny", "--pairs", "24"],
        ["--shape", "tiny", "--pairs", "1"],
    ),
    (
        "bench.bench_evaluate",
        [],
        ["--shape", "tiny", "--prompts", "2", "--tokens", "8", "--concurrency", "2"],
    ),
    (
        "bench.bench_server",
        [],
        ["--shape", "tiny", "--tokens", "8", "--reps", "1", "--clients", "2"],
    ),
    (
        "bench.bench_vision",
        [],
        ["--shape", "tiny", "--tokens", "8", "--repeats", "2", "--rows", "2", "--concurrency", "2"],
    ),
    (
        "bench.bench_vision_cache",
        ["--shape", "mid", "--pairs", "6"],
        ["--shape", "tiny", "--pairs", "1"],
    ),
    (
        "bench.bench_prompt_cache",
        ["--shape", "mid", "--prefix", "4000", "--pairs", "3"],
        ["--shape", "tiny", "--prefix", "300", "--pairs", "1"],
    ),
    (
        "bench.bench_load",
        ["--shape", "mid", "--clients", "8", "--rounds", "4", "--tokens", "32"],
        ["--shape", "tiny", "--clients", "2", "--rounds", "1", "--tokens", "8", "--words", "20"],
    ),
    (
        "bench.bench_kv_bits",
        ["--shape", "mid", "--prompt-tokens", "4000"],
        ["--shape", "mid", "--prompt-tokens", "300", "--tokens", "8", "--reps", "1"],
    ),
    (
        "bench.bench_fanout",
        [],
        ["--servers", "2", "--rows", "4", "--tokens", "8", "--in-flight", "4", "--pairs", "1"],
    ),
    ("bench.bench_audit", [], ["--rows", "1000"]),
    ("bench.bench_cache_lookup", [], ["--entries", "1,4", "--rounds", "3", "--layers", "2"]),
    # 1 s of streaming: shorter runs inflate messages/s past its target (edge effect).
    ("bench.bench_widget", [], ["--tokens", "2000", "--runs", "1"]),
]
STDERR_TAIL = 40  # lines of a failed bench's stderr kept in the results file


def _relay(stream: IO[str], tail: collections.deque[str]) -> None:
    """Copy a child's stderr to ours as it comes, keeping its last lines."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)


def run_bench(
    module: str, args: list[str], json_path: Path, *, tables_to_stderr: bool = False
) -> tuple[int, float, str]:
    """Run one bench module with ``--json json_path``; its stdout passes straight through.

    Args:
        module: The bench's module (``bench.bench_engine``).
        args: Its arguments, ``--json`` aside.
        json_path: Where it writes its report.
        tables_to_stderr: Send its stdout (the table) to our stderr, keeping stdout for JSON.

    Returns:
        (exit status, wall seconds, the last lines of its stderr).
    """
    command = [sys.executable, "-m", module, *args, "--json", str(json_path)]
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    begin = time.perf_counter()
    stdout = sys.stderr if tables_to_stderr else None
    with subprocess.Popen(
        command, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        relay = threading.Thread(target=_relay, args=(process.stderr, tail), daemon=True)
        relay.start()
        status = process.wait()
        relay.join(timeout=10)  # a leftover grandchild may hold the pipe open
    return status, time.perf_counter() - begin, "".join(tail)


def _read_report(path: Path) -> dict[str, Any] | None:
    """The bench's JSON report, or None when it wrote none (or not valid JSON)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def entry(
    module: str,
    argv: list[str],
    status: int,
    wall_s: float,
    stderr: str,
    report: dict[str, Any] | None,
) -> dict[str, Any]:
    """One bench's record in the combined file: its report plus how the run went.

    ``status`` is ``"skipped"`` when the bench's report says why it could not run, else
    ``"ok"`` (exit status 0) or ``"failed"`` (with the end of its stderr).
    """
    name = module.rsplit(".", 1)[-1].removeprefix("bench_")
    record: dict[str, Any] = {"bench": name} if report is None else dict(report)
    if report is not None and "skipped" in report:
        outcome = "skipped"
    else:
        outcome = "ok" if status == 0 else "failed"
    record.update(
        {"status": outcome, "exit_status": status, "argv": [module, *argv], "wall_s": wall_s}
    )
    if outcome == "failed":
        record["stderr_tail"] = stderr
        if report is None:
            record["error"] = "the bench exited without writing its JSON report"
    return record


def run_all(quick: bool, *, tables_to_stderr: bool = False) -> dict[str, Any]:
    """Run every bench (printing their tables) and gather their reports into one dict."""
    log = sys.stderr if tables_to_stderr else sys.stdout
    combined: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": now_iso(),
        "machine": machine_info(),
        "quick": quick,
        "benches": [],
    }
    with tempfile.TemporaryDirectory(prefix="mlxnb-bench-") as tmp:
        for module, full, small in BENCHES:
            argv = small if quick else full
            print(f"\n=== {' '.join([module, *argv])}", file=log, flush=True)
            json_path = Path(tmp) / f"{module}.json"
            status, wall_s, stderr = run_bench(
                module, argv, json_path, tables_to_stderr=tables_to_stderr
            )
            report = _read_report(json_path)
            combined["benches"].append(entry(module, argv, status, wall_s, stderr, report))
    combined["finished_at"] = now_iso()
    return combined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results file ('-': stdout)")
    parser.add_argument(
        "--quick", action="store_true", help="smallest settings: checks the plumbing, not speed"
    )
    args = parser.parse_args(argv)
    to_stdout = args.out == STDOUT
    combined = run_all(args.quick, tables_to_stderr=to_stdout)
    dump(combined, args.out)
    log = sys.stderr if to_stdout else sys.stdout
    print(file=log)
    for bench in combined["benches"]:
        detail = bench.get("skipped", "") if bench["status"] == "skipped" else ""
        print(
            f"{bench['bench']:<10} {bench['status']:<8} exit {bench['exit_status']:<3} "
            f"{bench['wall_s']:7.1f} s  {detail}".rstrip(),
            file=log,
        )
    if not to_stdout:
        print(f"results: {args.out}")
    return 1 if any(bench["status"] == "failed" for bench in combined["benches"]) else 0


if __name__ == "__main__":
    sys.exit(main())
