"""Time to first token and aggregate tokens/s under load: mlxnb's /v1 beside mlx_lm.server.

Each round fires N streaming chat requests at one server at once (distinct prompts, so no
prompt-cache hits) and records every request's time to first token and the round's aggregate
tokens/s. Rounds alternate between the two servers after a warm-up round each, for every N in
``--clients``. Prints, per N, the p50 and p90 time to first token and the aggregate, with
ours ÷ peer per round pair.

Clients speak plain ``httpx`` and parse the SSE stream themselves, so the bench runs where the
``openai`` package is not installed (the offline GPU machine).

    python -m bench.bench_load --shape mid --clients 8,32 --rounds 6
    bash bench/gpu.sh run bench_load --shape qwen3-0.6b --dtype bfloat16 --rounds 12
"""

from __future__ import annotations

import argparse
import json
import operator
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from bench.servers import free_port, released_together, start


@dataclass(frozen=True)
class Stream:
    """One streamed request: when it was sent, its first token, its end, its tokens."""

    sent: float
    first: float
    end: float
    tokens: int

    @property
    def ttft(self) -> float:
        return self.first - self.sent


def prompt(round_id: str, index: int, words: int) -> str:
    """A distinct prompt of ``words`` filler words; every prompt has the same token count.

    The words are one fixed set, shuffled per request (each word tokenizes on its own, so the
    count never changes): MLX's GPU backends compile per shape, and prompts of one length keep
    that cost inside the warm-up.
    """
    order = random.Random(f"{round_id}/{index}").sample(range(words), words)
    filler = " ".join(f"note{i % 50}" for i in order)
    return f"Write about the notes that follow. Notes: {filler}"


def stream_once(client: httpx.Client, url: str, model: str, text: str, tokens: int) -> Stream:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first = end = 0.0
    chunks, usage = 0, None
    with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                text_out = "".join(
                    delta.get(k) or "" for k in ("content", "reasoning_content", "reasoning")
                )
                if text_out:
                    chunks += 1
                    first = first or time.perf_counter()
                    end = time.perf_counter()
    closed = time.perf_counter()  # a stream with no visible text counts its whole length
    count = int(usage["completion_tokens"]) if usage else chunks
    return Stream(sent, first or closed, end or closed, count)


def one_round(
    url: str, model: str, clients: int, tokens: int, words: int, tag: str
) -> tuple[list[Stream], list[str]]:
    """``clients`` requests released together; the streams that ended, and the failures."""
    return released_together(
        clients,
        lambda: httpx.Client(timeout=600),
        lambda client, index: stream_once(client, url, model, prompt(tag, index, words), tokens),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def round_figures(streams: list[Stream], failures: list[str]) -> dict[str, Any]:
    """A round's time to first token (of the requests served) and aggregate tokens/s."""
    if not streams:
        raise RuntimeError(f"every request failed: {failures[0]}")
    ttfts = [s.ttft for s in streams]
    wall = max(s.end for s in streams) - min(s.sent for s in streams)
    return {
        "ttfts_ms": [round(1000 * t, 1) for t in sorted(ttfts)],
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p90_ms": 1000 * percentile(ttfts, 0.9),
        "aggregate_tps": sum(s.tokens for s in streams) / wall,
        "failed": len(failures),
        "failures": sorted(set(failures)),
    }


def servers_for(path: str, variants: list[str]) -> dict[str, tuple[list[str], int]]:
    """The commands to start: the peer, ``mlxnb serve``, and each ``NAME:ARGS`` variant."""
    python = sys.executable
    commands: dict[str, list[str]] = {
        "peer": [python, "-m", "mlx_lm.server", "--model", path, "--log-level", "WARNING"],
        "mlxnb": [python, "-m", "mlxnb", "serve", path, "--log-level", "warning"],
    }
    for variant in variants:
        name, _, options = variant.partition(":")
        commands[name] = [python, "-m", "bench.variant_server", path, *options.split()]
    ports = {name: free_port() for name in commands}
    return {
        name: ([*command, "--port", str(ports[name])], ports[name])
        for name, command in commands.items()
    }


def served_name(url: str, path: str) -> str:
    """The model name a server lists first (``path`` when it lists none: mlx_lm.server)."""
    try:
        listed = httpx.get(f"{url}/models", timeout=10).json().get("data") or []
    except ValueError:  # mlx_lm.server fails to list without a Hugging Face cache folder
        listed = []
    return str(listed[0]["id"]) if listed else path


def measure(args: argparse.Namespace, path: str) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Per client count, per server: one dict of figures per round (servers alternate)."""
    commands = servers_for(path, args.variant)
    servers = {name: start(command, port) for name, (command, port) in commands.items()}
    urls = {name: f"http://127.0.0.1:{server.port}/v1" for name, server in servers.items()}
    counts = [int(n) for n in args.clients.split(",")]
    names = list(servers)
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    try:
        models = {name: served_name(url, path) for name, url in urls.items()}
        for name, url in urls.items():  # warm-up: compile every batch size once
            for n in counts:
                for _ in range(2):
                    one_round(url, models[name], n, 16, args.words, f"warm-{name}-{n}")
        for n in counts:
            results[n] = {name: [] for name in names}
            for index in range(args.rounds):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    streams, failures = one_round(
                        urls[name], models[name], n, args.tokens, args.words, f"{n}-{index}"
                    )
                    figures = round_figures(streams, failures)
                    results[n][name].append(figures)
                    print(
                        f"{n:3} clients  round {index:2}  {name:8}  "
                        f"TTFT p50 {figures['ttft_p50_ms']:8.1f} ms  "
                        f"p90 {figures['ttft_p90_ms']:8.1f} ms  "
                        f"{figures['aggregate_tps']:8.1f} tok/s"
                        + (f"  {len(failures)} failed" if failures else ""),
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    return results


def summarize(results: dict[int, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Figures per client count: each server's medians, and each mlxnb ÷ peer per round pair."""
    figures: dict[str, Any] = {}
    metrics = (("ttft_p50_ms", "ms"), ("ttft_p90_ms", "ms"), ("aggregate_tps", "tok/s"))
    for n, sides in results.items():
        for key, unit in metrics:
            peer = [r[key] for r in sides["peer"]]
            for name, rounds in sides.items():
                values = [r[key] for r in rounds]
                figures[f"{name}_{key}_{n}"] = figure(f"{name} {key} at {n}", values, unit=unit)
                if name == "peer":
                    continue
                ratios = list(map(operator.truediv, values, peer))
                target = ">= 1.0" if key == "aggregate_tps" else "<= 1.0"
                figures[f"{key}_{name}_over_peer_{n}"] = figure(
                    f"{key} {name} / peer at {n}", ratios, unit="x", target=target
                )
        for name, rounds in sides.items():
            failed = sum(r.get("failed", 0) for r in rounds)
            figures[f"{name}_failed_{n}"] = figure(
                f"{name} requests failed at {n} (of {n * len(rounds)})", [failed], unit="requests"
            )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: a random-weight Qwen3)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--dtype", default="float32", help="the random model's dtype")
    parser.add_argument("--bits", type=int, default=None, help="quantize the model to this")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request")
    parser.add_argument("--words", type=int, default=120, help="filler words per prompt")
    parser.add_argument("--clients", default="8,32", help="client counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per server and count")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="another mlxnb server, NAME:OPTIONS of bench.variant_server (repeatable)",
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("load", args)
    with human_output(args.json):
        path = args.model or str(bench_model(args.shape, args.dtype, args.bits))
        results = measure(args, path)
        figures = summarize(results)
        for key, value in figures.items():
            if "_failed_" in key and value["value"]:
                print(f"{value['label']:40} {value['value']:.0f}")
            if "over_peer" in key:
                low, high = value["min"], value["max"]
                print(f"{key:40} median {value['value']:.3f}  [{low:.3f}, {high:.3f}]")
    write_report(report, {"model": path, "rounds": results, "figures": figures}, args.json)


if __name__ == "__main__":
    main()
