"""A restarted kernel's first turn over a long system prompt: cold against the disk cache.

Each pair starts two new engines on the same model, as two new kernels would: one with an empty
``prompt_cache_dir`` (cold: the whole prompt is prefilled) and one whose folder an earlier engine
filled with the same system prompt (warm: its KV cache is loaded at start). Printed: time to
first token of both and cold ÷ warm (target ≥ 5 for a 4 000-token prefix).

Run: ``python -m bench.bench_prompt_cache [--shape mid] [--prefix 4000] [--pairs 5] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

SENTENCE = "The keeper climbs the stairs at dusk, trims the wick and winds the clockwork. "


def system_prompt(engine: mlxnb.Engine, tokens: int) -> str:
    """A system prompt of about ``tokens`` tokens for this model's tokenizer."""
    per = len(engine.tokenizer.encode(SENTENCE))
    return SENTENCE * max(1, tokens // per)


def first_turn(path: Path, folder: Path, system: str, question: str) -> mlxnb.Usage:
    """A new engine's first turn (loading the folder's caches at start), then closed."""
    with mlxnb.Engine(path, audit=False, max_tokens=1, prompt_cache_dir=folder) as engine:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return engine.generate(messages).usage


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the pairs, print the table, return the raw numbers and figures."""
    path = bench_model(args.shape, args.dtype)
    with mlxnb.Engine(path, audit=False) as probe:
        system = system_prompt(probe, args.prefix)
    cold_ms: list[float] = []
    warm_ms: list[float] = []
    cached: list[int] = []
    with tempfile.TemporaryDirectory() as root:
        filled = Path(root) / "filled"
        first_turn(path, filled, system, "Warm-up: who lights the lamp?")
        for index in range(args.pairs):
            empty = Path(root) / f"empty-{index}"
            cold = first_turn(path, empty, system, f"Question {index}: when?")
            warm = first_turn(path, filled, system, f"Question {index}: when?")
            assert cold.time_to_first_token is not None and warm.time_to_first_token is not None
            cold_ms.append(1000 * cold.time_to_first_token)
            warm_ms.append(1000 * warm.time_to_first_token)
            cached.append(warm.cached_tokens)
    ratios = [c / w for c, w in zip(cold_ms, warm_ms, strict=True)]
    figures = {
        "cold_ttft_ms": figure(
            "new kernel, empty cache folder: time to first token", cold_ms, unit="ms"
        ),
        "warm_ttft_ms": figure(
            "new kernel, filled cache folder: time to first token", warm_ms, unit="ms"
        ),
        "cold_vs_warm": figure("ratio cold ÷ warm", ratios, unit="x", target=">= 5"),
        "cached_tokens": figure("prompt tokens served from the folder", cached, unit="tokens"),
    }
    import mlx.core as mx

    print(
        f"\nprompt cache across kernels — shape {args.shape} {args.dtype} on {mx.default_device()},"
        f" ~{args.prefix}-token system prompt, {args.pairs} pairs (median [min, max])"
    )
    width = max(len(item["label"]) for item in figures.values())
    for item in figures.values():
        spread = f"[{min(item['values']):.1f}, {max(item['values']):.1f}]"
        print(f"  {item['label']:<{width}}  {item['value']:9.1f} {item['unit']:<6} {spread}")
    runs = [
        {"cold_ttft_ms": c, "warm_ttft_ms": w, "cached_tokens": t}
        for c, w, t in zip(cold_ms, warm_ms, cached, strict=True)
    ]
    return {"runs": runs, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--prefix", type=int, default=4000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("prompt_cache", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(report, measured, args.json)


if __name__ == "__main__":
    main()
