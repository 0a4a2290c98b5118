"""What a shape the backend has not seen costs: a forward pass at a new shape, then again.

MLX's GPU backends prepare work per shape on first use (kernels, attention plans), so a prefill
whose length the process has not met yet can cost far more than the same prefill a second time.
This bench runs raw mlx-lm forward passes (no engine) over distinct shapes, each twice in a row,
and reports first - second. Cases: a lone prompt from an empty cache; one after a cached prefix
(what a prompt-cache hit leaves to prefill); a batch of prompts; one prompt length after
prefixes of new lengths; long prompts (where the attention kernel's own speed shows); a decode
step. ``--distinct N`` then prefills N new lengths in a row and keeps any error the backend
raises (MLX can be told to refuse a thrashing plan cache).

Usage::

    python -m bench.bench_shapes --shape tiny
    bash bench/gpu.sh run bench_shapes --shape qwen3-0.6b --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report


def timed(model: Any, batch: int, length: int, prefix: int) -> float:
    """Milliseconds of one evaluated prefill of ``length`` tokens per row after ``prefix`` cached.

    The cache and its prefix are built before the clock starts.
    """
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    if prefix:
        mx.eval(model(mx.ones((batch, prefix), dtype=mx.int32), cache=cache))
        mx.eval([c.state for c in cache])
    tokens = mx.ones((batch, length), dtype=mx.int32)
    mx.synchronize()
    start = time.perf_counter()
    mx.eval(model(tokens, cache=cache))
    mx.synchronize()
    return (time.perf_counter() - start) * 1000


def twice(model: Any, batch: int, length: int, prefix: int, shown: int) -> dict[str, float]:
    """The first and second call of one prefill, under ``shown`` (the length the case varies)."""
    return {
        "length": shown,
        "first_ms": timed(model, batch, length, prefix),
        "second_ms": timed(model, batch, length, prefix),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mlx_lm import load

    model, _ = load(str(bench_model(args.shape, args.dtype, args.bits)))
    timed(model, 1, 8, 0)  # the process's own first-use costs, shape-independent
    base = args.base
    lengths = [base + 3 * i for i in range(args.lengths)]
    batch = args.batch
    cases = {
        "lone prompt": [twice(model, 1, n, 0, n) for n in lengths],
        "lone prompt after a 64-token cached prefix": [twice(model, 1, n, 64, n) for n in lengths],
        f"batch of {batch} prompts": [twice(model, batch, n, 0, n) for n in lengths],
        "32-token prompt after a cached prefix of that length": [
            twice(model, 1, 32, n, n) for n in lengths
        ],
        "long prompt": [twice(model, 1, n, 0, n) for n in args.long],
        "decode step after a prompt of that length": [twice(model, 1, 1, n, n) for n in lengths],
    }
    figures = {}
    for name, rows in cases.items():
        firsts = [r["first_ms"] for r in rows]
        seconds = [r["second_ms"] for r in rows]
        extra = [r["first_ms"] - r["second_ms"] for r in rows]
        print(
            f"{name:48s} first {statistics.median(firsts):8.1f} ms  "
            f"again {statistics.median(seconds):8.1f} ms  "
            f"extra {statistics.median(extra):8.1f} ms  [{min(extra):.1f}, {max(extra):.1f}]"
        )
        label = f"{name}: first call - second, ms"
        figures[label] = figure(label, extra, unit="ms")
    if args.distinct:
        cases["distinct"] = distinct_shapes(model, args.distinct)
    return {"runs": cases, "figures": figures}


def distinct_shapes(model: Any, count: int) -> list[dict[str, Any]]:
    """Prefill ``count`` lone prompts of distinct lengths; stop at the first error, keep it."""
    done = 0
    started = time.perf_counter()
    error = None
    try:
        for length in range(2, count + 2):
            timed(model, 1, length, 0)
            done += 1
    except Exception as exc:  # what the backend raises is the finding
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    print(f"distinct prompt lengths: {done} of {count} in {seconds:.1f} s; error: {error}")
    return [{"length": done, "seconds": seconds, "error": error}]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--base", type=int, default=120, help="the first prompt length")
    parser.add_argument("--lengths", type=int, default=8, help="distinct lengths per case")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--long",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1024, 2048, 4096],
        help="lone prompt lengths where attention's own cost shows (comma-separated)",
    )
    parser.add_argument("--distinct", type=int, default=0, help="then this many new lengths")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("shapes", args)
    with human_output(args.json):
        results = run(args)
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
