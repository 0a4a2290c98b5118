"""Streamed tokens/s through mlxnb's /v1, side by side with raw mlx-lm and mlx_lm.server.

One run, one model, the same prompts for everyone, greedy decoding, interleaved repetitions:

- raw: ``mlx_lm.stream_generate`` in this process (the ceiling);
- mlxnb: ``mlxnb serve`` in a subprocess, read with the official ``openai`` client (streaming);
- peer: ``mlx_lm.server`` in a subprocess, read the same way.

Both servers listen on 127.0.0.1 only. Prints a table and the ratios the README quotes:
mlxnb ÷ raw (single stream), mlxnb ÷ peer (single stream, N-client aggregate) and time to first
token against the peer.

    python -m bench.bench_server                 # "mid" random-weight Qwen3 (CPU-friendly)
    python -m bench.bench_server --shape qwen3-0.6b --tokens 64
    python -m bench.bench_server --json results.json   # the numbers as JSON (`-`: stdout)
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import openai

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from bench.servers import free_port, released_together, start

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a hash map works, step by step.",
    "List ten uses for a paperclip and say why each works.",
]


@dataclass(frozen=True)
class Run:
    """One streamed generation: time to first token, tokens, and decode rate."""

    ttft: float
    tokens: int
    start: float
    first: float
    end: float

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / max(self.end - self.first, 1e-9)


def stream_once(client: openai.OpenAI, model: str, prompt: str, tokens: int) -> Run:
    begin = time.perf_counter()
    first = end = 0.0
    chunks = 0
    usage = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            text = (
                (choice.delta.content or "")
                + (extra.get("reasoning_content") or "")
                + (extra.get("reasoning") or "")
            )
            if text:
                chunks += 1
                first = first or time.perf_counter()
                end = time.perf_counter()
    count = usage.completion_tokens if usage is not None else chunks
    return Run(first - begin, count, begin, first, end)


def raw_once(model: Any, tokenizer: Any, prompt: str, tokens: int) -> Run:
    from mlx_lm import stream_generate

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    begin = time.perf_counter()
    first = end = 0.0
    count = 0
    for _ in stream_generate(model, tokenizer, text, max_tokens=tokens):
        count += 1
        first = first or time.perf_counter()
        end = time.perf_counter()
    return Run(first - begin, count, begin, first, end)


def concurrent(url: str, model: str, clients: int, tokens: int) -> float:
    """Aggregate tokens/s of ``clients`` simultaneous streams."""
    runs, failures = released_together(
        clients,
        lambda: openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600),
        lambda client, i: stream_once(
            client, model, PROMPTS[i % len(PROMPTS)] + f" (#{i})", tokens
        ),
    )
    if failures:
        raise RuntimeError(f"{len(failures)} of {clients} requests failed: {failures[0]}")
    total = sum(run.tokens for run in runs)
    return total / (max(r.end for r in runs) - min(r.start for r in runs))


def measure(
    args: argparse.Namespace, path: str
) -> tuple[dict[str, list[Run]], dict[str, list[float]]]:
    """Start both servers, run the interleaved repetitions; returns single and aggregate runs."""
    import mlx_lm

    ours_port, peer_port = free_port(), free_port()
    servers = {
        "mlxnb": start(
            [
                sys.executable,
                "-m",
                "mlxnb",
                "serve",
                path,
                "--port",
                str(ours_port),
                "--log-level",
                "warning",
            ],
            ours_port,
        ),
        "peer": start(
            [
                sys.executable,
                "-m",
                "mlx_lm.server",
                "--model",
                path,
                "--port",
                str(peer_port),
                "--log-level",
                "WARNING",
            ],
            peer_port,
        ),
    }
    urls = {"mlxnb": f"http://127.0.0.1:{ours_port}/v1", "peer": f"http://127.0.0.1:{peer_port}/v1"}
    try:
        clients = {
            k: openai.OpenAI(base_url=u, api_key="none", max_retries=0, timeout=600)
            for k, u in urls.items()
        }
        names = {"mlxnb": path, "peer": path}  # the peer lists no local-path models
        model, tokenizer = mlx_lm.load(path)
        for name, client in clients.items():  # warm-up: compile, caches, first allocation
            stream_once(client, names[name], "Warm up.", 8)
        raw_once(model, tokenizer, "Warm up.", 8)

        single: dict[str, list[Run]] = {"raw": [], "mlxnb": [], "peer": []}
        for rep in range(args.reps):
            for prompt in PROMPTS:
                tagged = f"{prompt} (run {rep})"  # a fresh prompt: no cross-run cache hits
                single["raw"].append(raw_once(model, tokenizer, tagged, args.tokens))
                for name in ("mlxnb", "peer") if rep % 2 == 0 else ("peer", "mlxnb"):
                    single[name].append(
                        stream_once(clients[name], names[name], tagged, args.tokens)
                    )
        aggregate: dict[str, list[float]] = {"mlxnb": [], "peer": []}
        for rep in range(args.reps):
            for name in ("mlxnb", "peer") if rep % 2 == 0 else ("peer", "mlxnb"):
                aggregate[name].append(
                    concurrent(urls[name], names[name], args.clients, args.tokens)
                )
    finally:
        for server in servers.values():
            server.stop()

    return single, aggregate


def print_table(
    args: argparse.Namespace,
    path: str,
    tps: dict[str, float],
    ttft: dict[str, float],
    agg: dict[str, float],
    ratios: dict[str, float],
) -> None:
    """The human-readable table: decode tokens/s, TTFT and aggregate, then the ratios."""
    print(
        f"model {path} ({args.shape}), {args.tokens} tokens/request, {args.reps} reps, "
        f"cpu_count={os.cpu_count()}"
    )
    print(f"{'':8}{'decode tok/s':>14}{'TTFT ms':>10}{f'{args.clients}-client tok/s':>18}")
    for name in ("raw", "mlxnb", "peer"):
        aggregate_text = f"{agg[name]:18.1f}" if name in agg else f"{'-':>18}"
        print(f"{name:8}{tps[name]:14.1f}{ttft[name] * 1000:10.1f}{aggregate_text}")
    for key, value in ratios.items():
        print(f"{key:28}{value:8.3f}")


def pairs(a: list[float], b: list[float], op: Callable[[float, float], float]) -> list[float]:
    """``op`` applied to the runs of two sides measured back to back (same prompt and rep)."""
    return [op(x, y) for x, y in zip(a, b, strict=True)]


def to_results(
    args: argparse.Namespace,
    path: str,
    single: dict[str, list[Run]],
    aggregate: dict[str, list[float]],
) -> dict[str, Any]:
    """Every run, the medians and ratios the table prints, and one figure per printed number.

    Ratios are printed as ratios of medians (``value``); their ``values`` are per pair: the two
    sides' runs of the same prompt and repetition (the aggregate: the same repetition).
    """
    tps = {k: statistics.median(r.decode_tps for r in runs) for k, runs in single.items()}
    ttft = {k: statistics.median(r.ttft for r in runs) for k, runs in single.items()}
    agg = {k: statistics.median(v) for k, v in aggregate.items()}
    ratios = {
        "v1_vs_raw_single": tps["mlxnb"] / tps["raw"],
        "v1_vs_peer_single": tps["mlxnb"] / tps["peer"],
        f"v1_vs_peer_{args.clients}_clients": agg["mlxnb"] / agg["peer"],
        "ttft_v1_over_peer": ttft["mlxnb"] / ttft["peer"],
    }
    decode = {k: [r.decode_tps for r in runs] for k, runs in single.items()}
    ttft_ms = {k: [1000 * r.ttft for r in runs] for k, runs in single.items()}
    divide = operator.truediv
    figures: dict[str, Any] = {}
    for name in ("raw", "mlxnb", "peer"):
        figures[f"{name}_decode_tps"] = figure(f"{name} decode tok/s", decode[name], unit="tok/s")
        figures[f"{name}_ttft_ms"] = figure(f"{name} TTFT", ttft_ms[name], unit="ms")
    for name in ("mlxnb", "peer"):
        figures[f"{name}_aggregate_tps"] = figure(
            f"{name} {args.clients}-client tok/s", aggregate[name], unit="tok/s"
        )
    per_pair = {
        "v1_vs_raw_single": (pairs(decode["mlxnb"], decode["raw"], divide), ">= 0.95"),
        "v1_vs_peer_single": (pairs(decode["mlxnb"], decode["peer"], divide), ">= 1.0"),
        f"v1_vs_peer_{args.clients}_clients": (
            pairs(aggregate["mlxnb"], aggregate["peer"], divide),
            ">= 1.0",
        ),
        "ttft_v1_over_peer": (pairs(ttft_ms["mlxnb"], ttft_ms["peer"], divide), "<= 1.0"),
    }
    for key, (values, target) in per_pair.items():
        figures[key] = figure(key, values, unit="x", value=ratios[key], target=target)
    runs = single.items()
    return {
        "model": path,
        "shape": args.shape if not args.model else None,
        "runs": {
            "single": {k: [{**asdict(r), "decode_tps": r.decode_tps} for r in v] for k, v in runs},
            "aggregate_tps": aggregate,
        },
        "single_tps": tps,
        "ttft_s": ttft,
        "aggregate_tps": agg,
        "ratios": ratios,
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: a random-weight Qwen3)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per prompt")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("server", args)
    with human_output(args.json):
        path = args.model or str(bench_model(args.shape))
        single, aggregate = measure(args, path)
        results = to_results(args, path, single, aggregate)
        tps, ttft, agg = results["single_tps"], results["ttft_s"], results["aggregate_tps"]
        print_table(args, path, tps, ttft, agg, results["ratios"])
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
