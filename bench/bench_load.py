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
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from bench.servers import free_port, start

TOPICS = ("a lighthouse", "a hash map", "a paperclip", "the tides", "a violin", "bread")


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
    """A distinct prompt of about ``words`` words (the tag first, so no prefix is shared)."""
    topic = TOPICS[index % len(TOPICS)]
    filler = " ".join(f"detail{i % 50}" for i in range(words))
    return f"[{round_id}-{index}] Write about {topic}. Notes: {filler}"


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
) -> list[Stream]:
    """``clients`` requests released together; every request's stream."""
    barrier = threading.Barrier(clients)
    streams: list[Stream] = []
    lock = threading.Lock()

    def client_thread(index: int) -> None:
        with httpx.Client(timeout=600) as client:
            barrier.wait()
            result = stream_once(client, url, model, prompt(tag, index, words), tokens)
        with lock:
            streams.append(result)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return streams


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def round_figures(streams: list[Stream]) -> dict[str, float]:
    ttfts = [s.ttft for s in streams]
    wall = max(s.end for s in streams) - min(s.sent for s in streams)
    return {
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p90_ms": 1000 * percentile(ttfts, 0.9),
        "aggregate_tps": sum(s.tokens for s in streams) / wall,
    }


def servers_for(path: str) -> dict[str, tuple[list[str], int]]:
    ours, peer = free_port(), free_port()
    python = sys.executable
    peer_command = ["-m", "mlx_lm.server", "--model", path, "--port", str(peer)]
    return {
        "mlxnb": (
            [python, "-m", "mlxnb", "serve", path, "--port", str(ours), "--log-level", "warning"],
            ours,
        ),
        "peer": (
            [python, *peer_command, "--log-level", "WARNING"],
            peer,
        ),
    }


def measure(args: argparse.Namespace, path: str) -> dict[int, dict[str, list[dict[str, float]]]]:
    """Per client count, per server: one dict of figures per round."""
    processes = {name: start(command, port) for name, (command, port) in servers_for(path).items()}
    urls = {name: f"http://127.0.0.1:{server.port}/v1" for name, server in processes.items()}
    counts = [int(n) for n in args.clients.split(",")]
    results: dict[int, dict[str, list[dict[str, float]]]] = {}
    try:
        for name, url in urls.items():  # warm-up: compile every batch size once
            for n in counts:
                one_round(url, path, n, 16, args.words, f"warm-{name}-{n}")
        for n in counts:
            results[n] = {"mlxnb": [], "peer": []}
            for index in range(args.rounds):
                order = ("mlxnb", "peer") if index % 2 == 0 else ("peer", "mlxnb")
                for name in order:
                    streams = one_round(
                        urls[name], path, n, args.tokens, args.words, f"{n}-{index}"
                    )
                    figures = round_figures(streams)
                    results[n][name].append(figures)
                    print(
                        f"{n:3} clients  round {index:2}  {name:6}  "
                        f"TTFT p50 {figures['ttft_p50_ms']:8.1f} ms  "
                        f"p90 {figures['ttft_p90_ms']:8.1f} ms  "
                        f"{figures['aggregate_tps']:8.1f} tok/s",
                        flush=True,
                    )
    finally:
        for process in processes.values():
            process.stop()
    return results


def summarize(results: dict[int, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    """Figures per client count: each side's medians and ours ÷ peer per round pair."""
    figures: dict[str, Any] = {}
    for n, sides in results.items():
        for key, unit in (("ttft_p50_ms", "ms"), ("ttft_p90_ms", "ms"), ("aggregate_tps", "tok/s")):
            ours = [r[key] for r in sides["mlxnb"]]
            peer = [r[key] for r in sides["peer"]]
            figures[f"mlxnb_{key}_{n}"] = figure(f"mlxnb {key} at {n}", ours, unit=unit)
            figures[f"peer_{key}_{n}"] = figure(f"peer {key} at {n}", peer, unit=unit)
            ratios = list(map(operator.truediv, ours, peer))
            target = ">= 1.0" if key == "aggregate_tps" else "<= 1.0"
            figures[f"{key}_v1_over_peer_{n}"] = figure(
                f"{key} mlxnb / peer at {n}", ratios, unit="x", target=target
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
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("load", args)
    with human_output(args.json):
        path = args.model or str(bench_model(args.shape, args.dtype, args.bits))
        results = measure(args, path)
        figures = summarize(results)
        for key, value in figures.items():
            if "over_peer" in key:
                low, high = value["min"], value["max"]
                print(f"{key:40} median {value['value']:.3f}  [{low:.3f}, {high:.3f}]")
    write_report(report, {"model": path, "rounds": results, "figures": figures}, args.json)


if __name__ == "__main__":
    main()
