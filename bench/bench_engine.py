"""Engine overhead and batching, measured side by side in one run.

Compares, on the same model, prompt and token count:
1. single stream: ``engine.stream`` tokens/s ÷ raw ``mlx_lm.stream_generate`` tokens/s;
2. time to first token: ours minus raw (ms);
3. aggregate tokens/s of N concurrent streams ÷ one stream (continuous batching).

Run: ``make bench`` or ``python -m bench.bench_engine --shape mid [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import mlx_lm

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper. " * 4}]


def raw_run(model: Any, tokenizer: Any, tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    # Rendering the chat template is part of the work both sides do before the first token.
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)
    first = None
    count = 0
    for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        first = first or time.perf_counter()
        count = response.generation_tokens
    end = time.perf_counter()
    assert first is not None
    return count / (end - first), first - start


async def ours_run(engine: mlxnb.Engine, tokens: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    done = None
    async for event in engine.stream(PROMPT, max_tokens=tokens):
        first = first or time.perf_counter()
        if isinstance(event, mlxnb.Done):
            done = event
    end = time.perf_counter()
    assert first is not None and done is not None
    return done.usage.completion_tokens / (end - first), first - start, done.usage.completion_tokens


async def concurrent_run(engine: mlxnb.Engine, streams: int, tokens: int) -> float:
    async def one(i: int) -> int:
        # Distinct prompts, so nothing is served from the prompt cache.
        messages = [{"role": "user", "content": f"Story {i}: " + PROMPT[0]["content"]}]
        turn = await engine.agenerate(messages, max_tokens=tokens)
        return turn.usage.completion_tokens

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(streams)))
    return sum(counts) / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison, print the table and return the raw numbers and figures."""
    path = bench_model(args.shape, args.dtype)
    engine = mlxnb.load(path, audit=False, prompt_cache_size=0)
    # mlx-lm's own load of the same directory for the raw baseline (same thread as its runs).
    model, tokenizer = mlx_lm.load(str(path))

    raw_tps, raw_ttft, our_tps, our_ttft = [], [], [], []
    raw_run(model, tokenizer, 8)
    asyncio.run(ours_run(engine, 8))
    for _ in range(args.repeats):
        tps, ttft = raw_run(model, tokenizer, args.tokens)
        raw_tps.append(tps)
        raw_ttft.append(ttft)
        tps, ttft, _ = asyncio.run(ours_run(engine, args.tokens))
        our_tps.append(tps)
        our_ttft.append(ttft)
    single = statistics.median(our_tps)
    # Warm up the batched path too (MLX's GPU backends compile kernels per shape on first use).
    asyncio.run(concurrent_run(engine, args.streams, 8))
    aggregates = [
        asyncio.run(concurrent_run(engine, args.streams, args.tokens)) for _ in range(args.repeats)
    ]
    aggregate = statistics.median(aggregates)
    engine.close()

    rows = [
        ("raw mlx_lm.stream_generate tokens/s", f"{statistics.median(raw_tps):.1f}"),
        ("engine.stream tokens/s", f"{single:.1f}"),
        ("ratio engine ÷ raw (target ≥ 0.97)", f"{single / statistics.median(raw_tps):.3f}"),
        ("raw time to first token (ms)", f"{1000 * statistics.median(raw_ttft):.1f}"),
        ("engine time to first token (ms)", f"{1000 * statistics.median(our_ttft):.1f}"),
        (
            "TTFT overhead (ms, target ≤ 5)",
            f"{1000 * (statistics.median(our_ttft) - statistics.median(raw_ttft)):+.1f}",
        ),
        (f"{args.streams} concurrent streams, aggregate tokens/s", f"{aggregate:.1f}"),
        (f"ratio {args.streams} streams ÷ 1 stream (target ≥ 3)", f"{aggregate / single:.2f}"),
    ]
    import mlx.core as mx

    print(
        f"\nengine benchmark — shape {args.shape} {args.dtype} on {mx.default_device()}, "
        f"{args.tokens} tokens, "
        f"{args.repeats} repeats (median), {mlxnb.__version__}"
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return results(args.streams, raw_tps, raw_ttft, our_tps, our_ttft, aggregates)


def results(
    streams: int,
    raw_tps: list[float],
    raw_ttft: list[float],
    our_tps: list[float],
    our_ttft: list[float],
    aggregates: list[float],
) -> dict[str, Any]:
    """The raw numbers (one entry per repeat) and every printed figure, for ``--json``.

    Ratios are printed as ratios of medians (``value``); their ``values`` are per-repeat pairs.
    """
    raw_ms = [1000 * t for t in raw_ttft]
    our_ms = [1000 * t for t in our_ttft]
    single, raw = statistics.median(our_tps), statistics.median(raw_tps)
    aggregate = statistics.median(aggregates)
    runs = [
        {
            "raw_tps": raw_tps[i],
            "engine_tps": our_tps[i],
            "raw_ttft_ms": raw_ms[i],
            "engine_ttft_ms": our_ms[i],
            "aggregate_tps": aggregates[i],
        }
        for i in range(len(raw_tps))
    ]
    figures = {
        "raw_tps": figure("raw mlx_lm.stream_generate tokens/s", raw_tps, unit="tok/s"),
        "engine_tps": figure("engine.stream tokens/s", our_tps, unit="tok/s"),
        "engine_vs_raw": figure(
            "ratio engine ÷ raw",
            (o / r for o, r in zip(our_tps, raw_tps, strict=True)),
            unit="x",
            value=single / raw,
            target=">= 0.97",
        ),
        "raw_ttft_ms": figure("raw time to first token", raw_ms, unit="ms"),
        "engine_ttft_ms": figure("engine time to first token", our_ms, unit="ms"),
        "ttft_overhead_ms": figure(
            "TTFT overhead, engine - raw",
            (o - r for o, r in zip(our_ms, raw_ms, strict=True)),
            unit="ms",
            value=statistics.median(our_ms) - statistics.median(raw_ms),
            target="<= 5",
        ),
        "aggregate_tps": figure(
            f"{streams} concurrent streams, aggregate tokens/s", aggregates, unit="tok/s"
        ),
        "streams_vs_single": figure(
            f"ratio {streams} streams ÷ 1 stream",
            (a / o for a, o in zip(aggregates, our_tps, strict=True)),
            unit="x",
            value=aggregate / single,
            target=">= 3",
        ),
    }
    return {"runs": runs, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("engine", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(report, measured, args.json)


if __name__ == "__main__":
    main()
