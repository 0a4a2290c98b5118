"""One model sharded over two processes (``mlx.launch --backend ring -n 2``) against one process.

Each round runs three programs, in rotating order: the engine alone; the engine under
``mlx.launch`` on loopback, where ``mlxnb.load(..., distributed=True)`` splits the model
(tensor parallel for these shapes) and rank 0 streams; and raw mlx-lm sharded the same way
(``sharded_load`` + ``stream_generate``, the cost of sharding without our lockstep). Inside each,
after a warm-up turn, one greedy stream of ``--tokens`` tokens is timed (decode tokens/s) and,
for the engine, a burst of ``--batch`` concurrent turns (aggregate tokens/s). Reported: sharded
÷ one process, and our sharded stream ÷ raw mlx-lm's sharded stream.
Run: ``python -m bench.bench_sharded [--shape mid] [--rounds 3] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

LAUNCH = Path(sys.executable).parent / "mlx.launch"
PROMPT = "Write a long story about a lighthouse keeper and the sea."


async def _timed(engine: Any, tokens: int, batch: int) -> dict[str, float]:
    messages = [{"role": "user", "content": PROMPT}]
    options = {"max_tokens": tokens, "temperature": 0.0}
    await engine.agenerate(messages, max_tokens=8)  # warm-up
    turn = await engine.agenerate(messages, **options)
    started = time.perf_counter()
    turns = await asyncio.gather(*(engine.agenerate(messages, **options) for _ in range(batch)))
    elapsed = time.perf_counter() - started
    made = sum(t.usage.completion_tokens for t in turns)
    return {"stream_tps": float(turn.usage.generation_tps or 0.0), "batch_tps": made / elapsed}


def raw_worker(model: str, out: str, tokens: int) -> None:
    """Raw mlx-lm, sharded over the group (rank 0 writes JSON)."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.utils import sharded_load

    group = mx.distributed.init()
    loaded, tokenizer = sharded_load(model, tensor_group=group)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True
    )
    for _ in stream_generate(loaded, tokenizer, prompt, max_tokens=8):
        pass
    last = list(stream_generate(loaded, tokenizer, prompt, max_tokens=tokens))[-1]
    if group.rank() == 0:
        Path(out).write_text(json.dumps({"stream_tps": last.generation_tps}))


def worker(model: str, out: str, tokens: int, batch: int) -> None:
    """Inside one run (alone, or each rank under mlx.launch): time, and rank 0 writes JSON."""
    import mlxnb

    engine = mlxnb.load(model, distributed=True, audit=False)
    result = asyncio.run(_timed(engine, tokens, batch))
    engine.close()
    Path(out).write_text(json.dumps(result))


def _ring_base() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_once(kind: str, model: Path, args: argparse.Namespace) -> dict[str, float]:
    """One program run (``one``, ``sharded`` or ``raw``); its figures."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        mode = "--raw-worker" if kind == "raw" else "--worker"
        program = [sys.executable, "-m", "bench.bench_sharded", mode, str(model), str(out)]
        program += ["--tokens", str(args.tokens), "--batch", str(args.batch)]
        if kind != "one":
            ring = ["--backend", "ring", "-n", "2", "-p", str(_ring_base())]
            program = [str(LAUNCH), *ring, *program]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        done = subprocess.run(program, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        result: dict[str, float] = json.loads(out.read_text())
        return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate one process and the sharded pair; the raw numbers and figures."""
    model = bench_model(args.shape, bits=args.bits)
    runs = []
    kinds = ["one", "sharded", "raw"]
    for index in range(args.rounds):
        order = kinds[index % 3 :] + kinds[: index % 3]
        result = {kind: run_once(kind, model, args) for kind in order}
        for key in ("stream_tps", "batch_tps"):
            result[f"{key}_ratio"] = {"x": result["sharded"][key] / result["one"][key]}
        result["raw_ratio"] = {"x": result["sharded"]["stream_tps"] / result["raw"]["stream_tps"]}
        runs.append(result)
        print(
            f"round {index}: one stream {result['one']['stream_tps']:.1f} tok/s, sharded "
            f"{result['sharded']['stream_tps']:.1f}, raw mlx-lm sharded "
            f"{result['raw']['stream_tps']:.1f}; batch of {args.batch} "
            f"{result['one']['batch_tps']:.1f} vs {result['sharded']['batch_tps']:.1f} tok/s"
        )
    figures = {}
    for key, label in (("stream_tps", "one stream"), ("batch_tps", f"{args.batch} at once")):
        figures[f"{key}_one"] = figure(
            f"{label}, one process", [r["one"][key] for r in runs], unit="tok/s"
        )
        figures[f"{key}_sharded"] = figure(
            f"{label}, two ranks", [r["sharded"][key] for r in runs], unit="tok/s"
        )
        figures[f"{key}_ratio"] = figure(
            f"{label}: two ranks / one process",
            [r[f"{key}_ratio"]["x"] for r in runs],
            unit="x",
        )
    figures["raw_stream_tps"] = figure(
        "one stream, raw mlx-lm on two ranks", [r["raw"]["stream_tps"] for r in runs], unit="tok/s"
    )
    figures["raw_ratio"] = figure(
        "one stream, two ranks: ours / raw mlx-lm", [r["raw_ratio"]["x"] for r in runs], unit="x"
    )
    for key in ("stream_tps_ratio", "batch_tps_ratio", "raw_ratio"):
        found = figures[key]
        spread = f"[{found['min']:.2f}, {found['max']:.2f}]"
        print(f"{found['label']}: median {found['value']:.2f}x {spread}")
    return {"model": str(model), "runs": runs, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--bits", type=int, choices=(4, 8), help="quantise the weights")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per turn")
    parser.add_argument("--batch", type=int, default=8, help="concurrent turns in the burst")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the order rotates)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--raw-worker", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.tokens, args.batch)
        return
    if args.raw_worker:
        raw_worker(args.raw_worker[0], args.raw_worker[1], args.tokens)
        return
    report = new_report("sharded", args)
    with human_output(args.json):
        results = measure(args)
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
