"""A lone request's time to first token: submitted on a helper thread (now) or on the loop.

``engine.stream`` submits its request (renders the prompt, checks the options) on a helper
thread, so a burst's prompts render in parallel and the caller's loop never stalls; a lone
request pays the hop to that thread and back. This bench measures that cost side by side:
alternating pairs (the order flips every pair) of one-token requests with distinct prompts,
one engine, the submission moved back onto the loop for the other side.

    python -m bench.bench_submit --shape tiny --pairs 24
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from mlxnb._engine.engine import Engine

SIDES = ("helper_thread", "on_loop")


async def submit_on_loop(self: Engine, *arguments: Any) -> Any:
    """The submission as it was before 2026-12-03: on the caller's loop."""
    return self._submit(*arguments)


async def first_token(engine: mlxnb.Engine, index: int) -> float:
    """Seconds from the call to the first event of a one-token request."""
    messages = [{"role": "user", "content": f"Question {index}: what is a lighthouse?"}]
    start = time.perf_counter()
    async for _ in engine.stream(messages, max_tokens=1):
        return time.perf_counter() - start
    raise AssertionError("the stream ended without an event")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the two sides, print the table, return the runs and figures."""
    engine = mlxnb.load(bench_model(args.shape, args.dtype), audit=False, prompt_cache_size=0)
    off_loop = Engine._submit_off_loop
    submissions = {"helper_thread": off_loop, "on_loop": submit_on_loop}
    counter = iter(range(1_000_000))

    def run(side: str) -> float:
        Engine._submit_off_loop = submissions[side]  # type: ignore[method-assign]
        try:
            return asyncio.run(first_token(engine, next(counter)))
        finally:
            Engine._submit_off_loop = off_loop  # type: ignore[method-assign]

    for _ in range(2):  # warm-up
        for side in SIDES:
            run(side)
    runs = []
    for pair in range(args.pairs):
        order = SIDES if pair % 2 == 0 else SIDES[::-1]
        runs.append({side: 1e3 * run(side) for side in order})
    engine.close()
    figures = {
        side: figure(f"time to first token, submitted {side.replace('_', ' ')}", values, unit="ms")
        for side, values in ((s, [r[s] for r in runs]) for s in SIDES)
    }
    figures["difference"] = figure(
        "difference, helper thread - on the loop",
        [r["helper_thread"] - r["on_loop"] for r in runs],
        unit="ms",
    )
    print(f"\nlone time to first token — shape {args.shape} {args.dtype}, {args.pairs} pairs")
    for item in figures.values():
        spread = f"[{min(item['values']):+.3f}, {max(item['values']):+.3f}]"
        print(f"  {item['label']:<48} {item['value']:+8.3f} {item['unit']} {spread}")
    return {"runs": runs, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--pairs", type=int, default=24)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("submit", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(report, measured, args.json)


if __name__ == "__main__":
    main()
