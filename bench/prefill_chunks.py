"""How a long prompt's prefill chunk size moves its time to first token and peak memory.

Where a backend's prompt attention is not fused (MLX's CPU backend, and its CUDA backend with
cuDNN's attention off, the engine's default there), each chunk of ``C`` prompt tokens holds its
attention scores over the whole context so far: ``heads x C x context`` values per layer. A
smaller chunk holds a smaller matrix for the same total work. This runs raw
``mlx_lm.stream_generate`` over one random prompt with each ``--chunks`` size in turn
(``prefill_step_size``), rounds alternating, and reports each size's time to first token and
MLX's peak memory. Attention is set up as an engine sets it (on CUDA, cuDNN's off unless
``MLX_CUDA_USE_CUDNN_SDPA`` is set already); the results say which it was.

Run: ``python -m bench.prefill_chunks [--shape mid] [--prompt 8192] [--chunks 2048 512]
[--rounds 2] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from mlxnb._engine.attention import CUDNN_ATTENTION, prefer_attention_without_plans


def prefill_once(model: Any, tokenizer: Any, prompt: list[int], chunk: int) -> tuple[float, float]:
    """``(seconds to the first token, peak GB)`` of one generation with ``chunk``-token passes."""
    import mlx.core as mx
    from mlx_lm import stream_generate

    mx.clear_cache()
    mx.reset_peak_memory()
    start = time.perf_counter()
    first = None
    for _ in stream_generate(model, tokenizer, prompt, max_tokens=2, prefill_step_size=chunk):
        first = first or time.perf_counter() - start
    assert first is not None
    return first, mx.get_peak_memory() / 1e9


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternating rounds of every chunk size (after one warm-up each) over one prompt."""
    import mlx.core as mx
    from mlx_lm import load

    prefer_attention_without_plans()  # before MLX's first use, as an engine does
    model, tokenizer = load(str(bench_model(args.shape, args.dtype)))
    mx.random.seed(0)
    prompt = mx.random.randint(0, 1000, (args.prompt,)).tolist()
    for chunk in args.chunks:
        prefill_once(model, tokenizer, prompt, chunk)  # kernels for this shape, compiled once
    seconds: dict[int, list[float]] = {chunk: [] for chunk in args.chunks}
    peaks: dict[int, list[float]] = {chunk: [] for chunk in args.chunks}
    for round_ in range(args.rounds):
        for chunk in args.chunks if round_ % 2 == 0 else args.chunks[::-1]:
            first, peak = prefill_once(model, tokenizer, prompt, chunk)
            seconds[chunk].append(first)
            peaks[chunk].append(peak)
    figures: dict[str, Any] = {}
    for chunk in args.chunks:
        figures[f"ttft_{chunk}_s"] = figure(
            f"chunks of {chunk}: time to first token", seconds[chunk], unit="s"
        )
        figures[f"peak_{chunk}_gb"] = figure(
            f"chunks of {chunk}: peak memory", peaks[chunk], unit="GB"
        )
    return {
        "device": str(mx.default_device()),
        CUDNN_ATTENTION: os.environ.get(CUDNN_ATTENTION),
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> None:
    """Print (and with ``--json`` write) each chunk size's time to first token and peak."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--prompt", type=int, default=8192, help="prompt tokens")
    parser.add_argument("--chunks", type=int, nargs="+", default=[2048, 512])
    parser.add_argument("--rounds", type=int, default=2)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("prefill_chunks", args)
    with human_output(args.json):
        results = measure(args)
        print(
            f"{args.prompt}-token prompt, {args.shape} {args.dtype} on {results['device']}"
            f" ({CUDNN_ATTENTION}={results[CUDNN_ATTENTION]}):"
        )
        for each in results["figures"].values():
            values = ", ".join(f"{v:.3f}" for v in each["values"])
            print(f"  {each['label']:40s} {each['median']:8.3f} {each['unit']}  ({values})")
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
