"""Per-token overhead of the engine: CPU time of the thread that launches each step.

Wall-clock tokens/s move with the machine's mood (±8 % on the 2-core VM, ±25 % on the GPU
machine). The CPU time that the launching thread spends per token does not: it is the Python
work between steps, and on a fast device it is what separates us from raw mlx-lm. This bench
measures, on a model small enough that overhead dominates, from the first token to the last:

- **raw**: ``mlx_lm.stream_generate`` on this thread: its CPU time and wall time per token;
- **engine**: ``engine.stream`` consumed on an event loop (as callers do): the worker thread's
  CPU time per token (asked of the worker itself, so it works on any OS), the consumer's CPU
  time per token, and the wall time per token.

It prints the overhead (engine worker CPU - raw CPU, µs per token; target ≤ 50), the time the
launching thread is off the CPU per token (waiting for the GIL or for the device), and engine ÷
raw tokens/s, each the median of alternating pairs after a warm-up, with their spread.

Run: ``python -m bench.bench_overhead [--shape tiny] [--pairs 12] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

import mlx_lm

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from mlxnb._engine.delivery import Outbox, _hand_over

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


@dataclass(frozen=True)
class Run:
    """One generation, first token to last: tokens, wall seconds, CPU seconds per thread."""

    tokens: int
    wall: float
    launcher_cpu: float  # the thread that launches each step (raw: this one; ours: the worker)
    consumer_cpu: float = 0.0  # the thread consuming the events (ours only)

    def per_token_us(self, seconds: float) -> float:
        return 1e6 * seconds / max(self.tokens, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall


def raw_run(model: Any, tokenizer: Any, tokens: int) -> Run:
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)
    first_wall = first_cpu = 0.0
    count = 0
    for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        if not first_wall:
            first_wall, first_cpu = time.perf_counter(), time.thread_time()
        count = response.generation_tokens
    return Run(count - 1, time.perf_counter() - first_wall, time.thread_time() - first_cpu)


def worker_cpu(engine: mlxnb.Engine) -> float:
    """The worker thread's own CPU time, read on the worker between steps."""
    return float(engine._worker.ask(time.thread_time, 10.0))


async def engine_run(engine: mlxnb.Engine, tokens: int) -> Run:
    first_wall = first_consumer = 0.0
    first_worker: asyncio.Future[float] | None = None
    done = None
    async for event in engine.stream(PROMPT, max_tokens=tokens):
        if first_worker is None:
            first_wall, first_consumer = time.perf_counter(), time.thread_time()
            # Asked from a helper thread so the loop keeps consuming meanwhile.
            first_worker = asyncio.ensure_future(asyncio.to_thread(worker_cpu, engine))
        if isinstance(event, mlxnb.Done):
            done = event
    wall, consumer = time.perf_counter() - first_wall, time.thread_time() - first_consumer
    assert done is not None and first_worker is not None
    launcher = await asyncio.to_thread(worker_cpu, engine) - await first_worker
    return Run(done.usage.completion_tokens - 1, wall, launcher, consumer)


class DirectWakeups:
    """The worker wakes each consumer's loop itself (how delivery worked before the notifier)."""

    def send(self, batches: Any) -> None:
        for loop, items in batches.items():
            loop.call_soon_threadsafe(_hand_over, items)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run alternating pairs, print the table, return the raw numbers and figures."""
    path = bench_model(args.shape, args.dtype, args.bits)
    options: dict[str, Any] = {"audit": False, "prompt_cache_size": 0, "kv_budget_bytes": None}
    engine = mlxnb.load(path, **options)
    direct = None
    if args.direct_wakeups:
        # A second engine whose worker wakes consumer loops itself: the A/B for the notifier.
        direct = mlxnb.Engine(path, name="direct-wakeups", **options)
        direct._worker._outbox = Outbox(DirectWakeups())  # type: ignore[arg-type]
    model, tokenizer = mlx_lm.load(str(path))
    raw_run(model, tokenizer, 16)
    for warm in (engine, direct):
        if warm is not None:
            asyncio.run(engine_run(warm, 16))
    pairs: list[tuple[Run, Run]] = []
    direct_pairs: list[tuple[Run, Run]] = []
    for _ in range(args.pairs):
        raw = raw_run(model, tokenizer, args.tokens)
        pairs.append((raw, asyncio.run(engine_run(engine, args.tokens))))
        if direct is not None:
            direct_pairs.append((raw, asyncio.run(engine_run(direct, args.tokens))))
    engine.close()
    results = report(args, pairs)
    if direct is not None:
        direct.close()
        print("\nthe same, with the worker waking consumer loops itself (no notifier thread):")
        results["direct_wakeups"] = report(args, direct_pairs)
    return results


def report(args: argparse.Namespace, pairs: list[tuple[Run, Run]]) -> dict[str, Any]:
    """Print the table and build the ``--json`` results from the pairs."""
    raw_cpu = [raw.per_token_us(raw.launcher_cpu) for raw, _ in pairs]
    our_cpu = [ours.per_token_us(ours.launcher_cpu) for _, ours in pairs]
    overhead = [o - r for o, r in zip(our_cpu, raw_cpu, strict=True)]
    raw_off = [raw.per_token_us(raw.wall - raw.launcher_cpu) for raw, _ in pairs]
    our_off = [ours.per_token_us(ours.wall - ours.launcher_cpu) for _, ours in pairs]
    consumer = [ours.per_token_us(ours.consumer_cpu) for _, ours in pairs]
    ratios = [ours.tokens_per_s / raw.tokens_per_s for raw, ours in pairs]
    figures = {
        "raw_cpu_us": figure("raw: launching thread CPU per token", raw_cpu, unit="us"),
        "engine_cpu_us": figure("engine: worker thread CPU per token", our_cpu, unit="us"),
        "overhead_us": figure(
            "overhead, worker CPU - raw CPU per token", overhead, unit="us", target="<= 50"
        ),
        "raw_off_cpu_us": figure("raw: launching thread off CPU per token", raw_off, unit="us"),
        "engine_off_cpu_us": figure("engine: worker off CPU per token", our_off, unit="us"),
        "consumer_cpu_us": figure("engine: consumer loop CPU per token", consumer, unit="us"),
        "engine_vs_raw": figure("ratio engine ÷ raw tokens/s", ratios, unit="x", target=">= 0.97"),
    }
    import mlx.core as mx

    print(
        f"\nper-token overhead — shape {args.shape} {args.dtype} on {mx.default_device()}, "
        f"{args.tokens} tokens, {args.pairs} alternating pairs (median [min, max]), "
        f"{mlxnb.__version__}"
    )
    width = max(len(f["label"]) for f in figures.values())
    for item in figures.values():
        spread = f"[{min(item['values']):.2f}, {max(item['values']):.2f}]"
        print(f"  {item['label']:<{width}}  {item['value']:9.2f} {item['unit']:<5} {spread}")
    runs = [
        {
            "raw_tokens": raw.tokens,
            "raw_wall_s": raw.wall,
            "raw_cpu_s": raw.launcher_cpu,
            "engine_tokens": ours.tokens,
            "engine_wall_s": ours.wall,
            "engine_worker_cpu_s": ours.launcher_cpu,
            "engine_consumer_cpu_s": ours.consumer_cpu,
        }
        for raw, ours in pairs
    ]
    return {"runs": runs, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--bits", type=int, default=None, help="quantise the model (e.g. 4)")
    parser.add_argument(
        "--direct-wakeups",
        action="store_true",
        help="also measure an engine whose worker wakes consumer loops itself (A/B)",
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    results = new_report("overhead", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(results, measured, args.json)


if __name__ == "__main__":
    main()
