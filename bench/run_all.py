"""Run every benchmark in turn (``make bench``); each prints its own table."""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    ["bench.bench_engine", "--shape", "mid", "--tokens", "64"],
    ["bench.bench_evaluate"],
    ["bench.bench_server"],
    ["bench.bench_audit"],
    ["bench.bench_widget"],
]


def main() -> None:
    failed = 0
    for bench in BENCHES:
        print(f"\n=== {' '.join(bench)}", flush=True)
        failed += subprocess.call([sys.executable, "-m", *bench]) != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
