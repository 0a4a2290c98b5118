"""evaluate() throughput against a sequential loop over engine.generate, side by side.

64 prompts of 64 tokens by default, on a random-weight model big enough to be memory-bound
(the "mid" shape, ~100 M parameters). Run: ``python -m bench.bench_evaluate``.
"""

from __future__ import annotations

import argparse
import time

import mlxnb
from bench.models import SHAPES, bench_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
