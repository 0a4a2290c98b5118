"""A prompt-cache lookup on the worker: mlx-lm's ``LRUPromptCache`` beside ours.

Every admission looks up the prompt cache on the thread that launches the model's steps, so
under load each lookup delays everyone's next pass. The store holds ``N`` conversations
(``--tokens`` each, a model of ``--layers`` layers) that share only a chat template's first
``--head`` tokens with the new prompt, the common case for a server's distinct users. Each
lookup is timed until the handed-over cache is evaluated (its copy made), alternating mlx-lm's
and ours, and the median is printed per store size.

Run: ``python -m bench.bench_cache_lookup [--entries 1,16,64] [--rounds 50] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from bench.report import add_json_argument, figure, human_output, new_report, write_report


def conversation(layers: int, tokens: int, heads: int, dim: int) -> list[Any]:
    """A stored KV cache of ``tokens`` tokens (random keys and values, evaluated)."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    cache = [KVCache() for _ in range(layers)]
    for layer in cache:
        keys = mx.random.normal((1, heads, tokens, dim)).astype(mx.bfloat16)
        layer.update_and_fetch(keys, keys)
    mx.eval([(layer.keys, layer.values) for layer in cache])
    return cache


def timed_lookup(store: Any, prompt: list[int]) -> float:
    """Seconds for one lookup, until the cache it hands over is evaluated."""
    import mlx.core as mx

    start = time.perf_counter()
    cache, _ = store.fetch_nearest_cache("m", prompt)
    mx.eval([(layer.keys, layer.values) for layer in cache])
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mlx_lm.models.cache import LRUPromptCache

    from mlxnb._engine.prompt_cache import PromptCache

    draw = random.Random(0)
    head = list(range(1, args.head + 1))
    runs: dict[str, list[dict[str, float]]] = {}
    figures: dict[str, Any] = {}
    print(f"prompt-cache lookup, {args.layers} layers, entries of {args.tokens} tokens sharing")
    print(f"{args.head} tokens with the prompt; median of {args.rounds} alternating rounds")
    for entries in args.entries:
        theirs, ours = LRUPromptCache(max_size=entries + 1), PromptCache(entries + 1, 1 << 40)
        for _ in range(entries):
            tokens = head + [draw.randrange(100, 150_000) for _ in range(args.tokens - args.head)]
            stored = conversation(args.layers, args.tokens, args.heads, args.dim)
            theirs.insert_cache("m", tokens, stored)
            ours.insert_cache("m", tokens, stored)
        prompt = head + [draw.randrange(100, 150_000) for _ in range(args.prompt)]
        rows = []
        for _ in range(args.rounds):
            rows.append(
                {"mlx_lm": timed_lookup(theirs, prompt), "ours": timed_lookup(ours, prompt)}
            )
        runs[str(entries)] = rows
        mlx_lm_us = [1e6 * row["mlx_lm"] for row in rows]
        ours_us = [1e6 * row["ours"] for row in rows]
        ratio = [row["mlx_lm"] / row["ours"] for row in rows]
        figures[f"mlx_lm_us_{entries}"] = figure(f"mlx-lm, {entries} stored", mlx_lm_us, unit="us")
        figures[f"ours_us_{entries}"] = figure(f"ours, {entries} stored", ours_us, unit="us")
        figures[f"speedup_{entries}"] = figure(f"mlx-lm ÷ ours, {entries} stored", ratio, unit="x")
        print(
            f"  {entries:3d} stored: mlx-lm {statistics.median(mlx_lm_us):9.1f} us"
            f"   ours {statistics.median(ours_us):7.1f} us   ({statistics.median(ratio):.1f}x)"
        )
    return {"runs": runs, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entries",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 16, 64],
        help="stored conversations, comma-separated (16: the engine's default cap)",
    )
    parser.add_argument("--tokens", type=int, default=260, help="tokens per stored conversation")
    parser.add_argument("--head", type=int, default=5, help="tokens the prompt shares with them")
    parser.add_argument("--prompt", type=int, default=125, help="the prompt's tokens after those")
    parser.add_argument("--layers", type=int, default=28, help="Qwen3-0.6B has 28")
    parser.add_argument("--heads", type=int, default=2, help="KV heads per layer")
    parser.add_argument("--dim", type=int, default=16, help="head dimension")
    parser.add_argument("--rounds", type=int, default=50)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("cache_lookup", args)
    with human_output(args.json):
        results = run(args)
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
