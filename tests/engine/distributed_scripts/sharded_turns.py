"""Run under ``mlx.launch`` (or alone): the same turns on a sharded engine, written as JSON.

Usage: ``sharded_turns.py MODEL OUT.json``. Rank 0 writes what its engine produced; the other
ranks follow inside ``mlxnb.load`` and exit when rank 0 closes. The test runs the same turns on a
single-process engine and compares.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import mlxnb

PROMPTS = ["Tell me a story.", "Count to ten.", "What is a prime number?", "Hello there"]


async def turns(engine: Any) -> dict[str, Any]:
    """The turns both engines take: concurrent, greedy and seeded, a cancel, a score."""

    async def one(prompt: str, **options: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}]
        turn = await engine.agenerate(messages, logprobs=True, max_tokens=24, **options)
        ids = [entry.id for entry in turn.logprobs]
        return {"ids": ids, "text": turn.reasoning + "|" + turn.content}

    # Concurrent greedy turns share batches. Sampled turns go one at a time: the random model's
    # distribution is nearly flat, so a batch's other rows (whose arrival order varies) could
    # move a logit by a rounding error and flip a sample.
    greedy = await asyncio.gather(*(one(p, temperature=0.0) for p in PROMPTS))
    sampled = [await one(p, temperature=1.0, seed=i) for i, p in enumerate(PROMPTS)]
    # A stream broken off early is cancelled on every rank; the next turn must still be right.
    stream = engine.stream([{"role": "user", "content": PROMPTS[0]}], max_tokens=2000)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    after = await one(PROMPTS[1], temperature=0.0)
    scores = engine.score("The capital of France is", [" Paris", " London"])
    return {
        "greedy": greedy,
        "sampled": sampled,
        "after_cancel": after,
        "scores": [round(s.logprob, 4) for s in scores],
    }


def main() -> None:
    model, out = sys.argv[1], sys.argv[2]
    engine = mlxnb.load(model, distributed=True, audit=False)
    result = asyncio.run(turns(engine))
    result["rank"] = int(os.environ.get("MLX_RANK", "0"))
    engine.close()
    with open(out, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
