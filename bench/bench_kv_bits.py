"""KV-cache quantisation (``kv_bits``): the memory a long context takes, and the speed.

One engine per setting (full precision, 8 bits, 4 bits) answers the same long prompt; each
reports the KV cache it kept (the prompt cache's bytes for that one conversation), the peak
memory MLX saw during the request, the time to first token and the decode rate. Settings
alternate for ``--reps`` rounds.

    python -m bench.bench_kv_bits --shape mid --prompt-tokens 4000
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

SETTINGS: dict[str, dict[str, Any]] = {
    "full": {},
    "8-bit": {"kv_bits": 8, "quantized_kv_start": 0},
    "4-bit": {"kv_bits": 4, "quantized_kv_start": 0},
}


def one_request(engine: mlxnb.Engine, prompt: list[int], tokens: int) -> dict[str, float]:
    """Ask once on a fresh prompt cache; what the conversation's KV took, and how fast."""
    import mlx.core as mx

    worker = engine._worker
    worker.ask(mx.reset_peak_memory, timeout=60)
    begin = time.perf_counter()
    first = 0.0
    generated = tokens
    for event in engine.stream_sync([], prompt=prompt, max_tokens=tokens, temperature=0.0):
        if isinstance(event, mlxnb.ContentDelta):
            first = first or time.perf_counter()
        elif isinstance(event, mlxnb.Done):
            generated = event.usage.completion_tokens
    end = time.perf_counter()
    stats = engine.memory()
    return {
        "kv_mb": stats.prompt_cache_bytes / 2**20,
        "peak_mb": stats.peak_bytes / 2**20,
        "ttft_s": first - begin,
        "decode_tps": (generated - 1) / max(end - first, 1e-9),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompt-tokens", type=int, default=4000)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated")
    parser.add_argument("--reps", type=int, default=2)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("kv_bits", args)
    with human_output(args.json):
        path = bench_model(args.shape, args.dtype)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
        for rep in range(args.reps):
            for name, options in SETTINGS.items():
                # A prompt no engine has seen (token ids, no template): nothing comes from a cache.
                prompt = [(rep * 7919 + 31 * i) % 5000 + 100 for i in range(args.prompt_tokens)]
                with mlxnb.Engine(path, audit=False, kv_group_size=64, **options) as engine:
                    result = one_request(engine, prompt, args.tokens)
                runs[name].append(result)
                print(
                    f"rep {rep} {name:6} KV {result['kv_mb']:8.1f} MB  peak "
                    f"{result['peak_mb']:8.1f} MB  TTFT {result['ttft_s']:6.2f} s  "
                    f"{result['decode_tps']:6.1f} tok/s",
                    flush=True,
                )
        figures: dict[str, Any] = {}
        full_kv = statistics.median(r["kv_mb"] for r in runs["full"])
        for name, results in runs.items():
            for key, unit in (("kv_mb", "MB"), ("peak_mb", "MB"), ("decode_tps", "tok/s")):
                figures[f"{name}_{key}"] = figure(
                    f"{name} {key}", [r[key] for r in results], unit=unit
                )
            kv = statistics.median(r["kv_mb"] for r in results)
            figures[f"{name}_kv_saving"] = figure(
                f"{name} KV: full ÷ this", [full_kv / kv], unit="x"
            )
            print(f"{name:6} KV {kv:8.1f} MB ({full_kv / kv:.2f}x less than full precision)")
    write_report(report, {"model": str(path), "runs": runs, "figures": figures}, args.json)


if __name__ == "__main__":
    main()
