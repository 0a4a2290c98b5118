"""evaluate() throughput against a sequential loop over engine.generate, side by side.

64 prompts of 64 tokens by default, on a random-weight model big enough to be memory-bound
(the "mid" shape, ~100 M parameters). Run: ``python -m bench.bench_evaluate [--json PATH]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison, print the table and return the raw numbers and figures."""
    engine = mlxnb.load(bench_model(args.shape), audit=False, prompt_cache_size=0)
    prompts = [
        f"Question {i}: describe a city you like in a few sentences." for i in range(args.prompts)
    ]
    engine.generate([{"role": "user", "content": "warm up"}], max_tokens=4)
    # Warm up the batched path as well (MLX's GPU backends compile kernels per shape).
    mlxnb.evaluate(prompts[: args.concurrency], model=engine, max_tokens=4, progress=False)

    start = time.perf_counter()
    sequential_tokens = 0
    for prompt in prompts:
        turn = engine.generate([{"role": "user", "content": prompt}], max_tokens=args.tokens)
        sequential_tokens += turn.usage.completion_tokens
    sequential = time.perf_counter() - start

    start = time.perf_counter()
    frame = mlxnb.evaluate(
        prompts,
        model=engine,
        max_tokens=args.tokens,
        concurrency=args.concurrency,
        progress=False,
    )
    batched = time.perf_counter() - start
    batched_tokens = int(frame["completion_tokens"].sum())
    engine.close()

    print(
        f"\nevaluate benchmark — shape {args.shape}, {args.prompts} prompts x {args.tokens} "
        f"tokens, concurrency {args.concurrency}"
    )
    print(
        f"  sequential engine.generate loop  {sequential:7.1f} s  "
        f"{sequential_tokens / sequential:7.1f} tokens/s"
    )
    print(
        f"  mlxnb.evaluate                   {batched:7.1f} s  "
        f"{batched_tokens / batched:7.1f} tokens/s"
    )
    print(
        f"  ratio evaluate ÷ sequential (target ≥ 3)  "
        f"{(batched_tokens / batched) / (sequential_tokens / sequential):.2f}"
    )
    return results(sequential, sequential_tokens, batched, batched_tokens)


def results(
    sequential: float, sequential_tokens: int, batched: float, batched_tokens: int
) -> dict[str, Any]:
    """The raw numbers of the one sequential and one batched run, and the printed figures."""
    sequential_tps = sequential_tokens / sequential
    batched_tps = batched_tokens / batched
    return {
        "runs": [
            {
                "sequential_s": sequential,
                "sequential_tokens": sequential_tokens,
                "evaluate_s": batched,
                "evaluate_tokens": batched_tokens,
            }
        ],
        "figures": {
            "sequential_s": figure("sequential engine.generate loop", [sequential], unit="s"),
            "sequential_tps": figure(
                "sequential engine.generate loop tokens/s", [sequential_tps], unit="tok/s"
            ),
            "evaluate_s": figure("mlxnb.evaluate", [batched], unit="s"),
            "evaluate_tps": figure("mlxnb.evaluate tokens/s", [batched_tps], unit="tok/s"),
            "evaluate_vs_sequential": figure(
                "ratio evaluate ÷ sequential",
                [batched_tps / sequential_tps],
                unit="x",
                target=">= 3",
            ),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("evaluate", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(report, measured, args.json)


if __name__ == "__main__":
    main()
