"""evaluate() fanned out over several `mlxnb serve` processes against one, rows/s side by side.

N server processes of the same model on loopback (each its own process, so its own MLX worker
and cores); after a warm-up, alternating pairs run the same rows through
``mlxnb.endpoints([first])`` and ``mlxnb.endpoints(all N)`` with the same number of requests in
flight in all, and report rows/s and the ratio N ÷ 1 per pair.
Run: ``python -m bench.bench_fanout [--servers 3] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from bench.servers import Server, free_port, start


def rows_per_s(group: Any, prompts: list[str], args: argparse.Namespace) -> float:
    """One evaluation through ``group``; rows per second (every row must succeed)."""
    started = time.perf_counter()
    frame = mlxnb.evaluate(
        prompts,
        model=group,
        progress=False,
        concurrency=args.in_flight,
        max_tokens=args.tokens,
        temperature=0.0,
    )
    elapsed = time.perf_counter() - started
    if not frame["error"].isna().all():
        raise SystemExit(f"rows failed: {frame['error'].dropna().unique()[:3]}")
    return len(frame) / elapsed


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the servers, run the pairs, print the table; the raw numbers and figures."""
    path = bench_model(args.shape)
    servers: list[Server] = []
    try:
        for _ in range(args.servers):
            port = free_port()
            command = [sys.executable, "-m", "mlxnb", "serve", str(path), "--port", str(port)]
            servers.append(start([*command, "--log-level", "warning"], port))
        urls = [f"http://127.0.0.1:{s.port}/v1" for s in servers]
        name = path.name
        one = mlxnb.endpoints(urls[:1], model=name, max_concurrency=args.in_flight, audit=False)
        per_server = max(1, args.in_flight // args.servers)
        many = mlxnb.endpoints(urls, model=name, max_concurrency=per_server, audit=False)
        prompts = [
            f"Row {i}: describe a city you like in a few sentences." for i in range(args.rows)
        ]
        rows_per_s(many, prompts[: args.in_flight], args)  # warm every server up
        rows_per_s(one, prompts[: args.in_flight], args)
        runs = []
        for pair in range(args.pairs):
            order = (
                [("one", one), ("many", many)] if pair % 2 == 0 else [("many", many), ("one", one)]
            )
            result = {label: rows_per_s(group, prompts, args) for label, group in order}
            result["ratio"] = result["many"] / result["one"]
            runs.append(result)
            print(
                f"pair {pair}: 1 server {result['one']:.2f} rows/s, {args.servers} servers "
                f"{result['many']:.2f} rows/s, ratio {result['ratio']:.2f}"
            )
    finally:
        for server in servers:
            server.stop()
    figures = {
        "rows_per_s_one": figure("rows/s, 1 server", [r["one"] for r in runs], unit="rows/s"),
        "rows_per_s_many": figure(
            f"rows/s, {args.servers} servers", [r["many"] for r in runs], unit="rows/s"
        ),
        "fanout_ratio": figure(
            f"{args.servers} servers / 1 server",
            [r["ratio"] for r in runs],
            unit="x",
            target=">= 2",
        ),
    }
    ratio = figures["fanout_ratio"]
    print(
        f"{args.servers} servers / 1: median {ratio['value']:.2f}x "
        f"[{ratio['min']:.2f}, {ratio['max']:.2f}] over {len(runs)} pairs"
    )
    return {"model": str(path), "runs": runs, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--servers", type=int, default=3, help="server processes fanned over")
    parser.add_argument("--rows", type=int, default=48, help="rows per evaluation")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per row")
    parser.add_argument("--in-flight", type=int, default=12, help="rows in flight in all")
    parser.add_argument("--pairs", type=int, default=4, help="alternating pairs after warm-up")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("fanout", args)
    with human_output(args.json):
        results = measure(args)
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
