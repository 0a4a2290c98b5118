"""MLX settings read once per process, A/B: one warm process per setting, rounds alternating.

MLX reads some environment variables once, at its first use (``MLX_MAX_OPS_PER_BUFFER``,
``MLX_CUDA_USE_CUDNN_SDPA``, ...), so two values cannot be compared inside one process. This
bench starts one process per setting (the first with none of them: MLX's defaults), loads the
model in each, warms each up, then times a lone greedy stream in each in turn, the order
rotating every round, and prints each setting's tokens/s ÷ the defaults' in the same round.

``--side raw`` times ``mlx_lm.stream_generate``; ``--side engine`` times ``engine.stream``
(whose engine may set some of these variables itself, unless the setting names them).

Each round also reports the time to the first token, MLX's peak memory and what its buffer
cache holds afterwards, so ``--prompt-tokens N`` (a prompt of N tokens) compares prefill
settings too.

Run: ``python -m bench.bench_env --set MLX_MAX_OPS_PER_BUFFER=100 [--set ...] [--rounds 12]
[--shape tiny] [--dtype bfloat16] [--bits 4] [--side raw|engine] [--prompt-tokens N]
[--json PATH]``. A setting may hold several variables, comma-separated: ``--set A=1,B=2``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
from typing import IO, Any

from bench.models import SHAPES, bench_model
from bench.report import REPO, add_json_argument, figure, human_output, new_report, write_report

DEFAULTS = "defaults"
METRICS = (
    ("tokens_per_s", "tok/s", 1.0),
    ("ttft_s", "ms", 1000.0),
    ("peak_gb", "GB", 1.0),
    ("cache_gb", "GB", 1.0),
)
"""What each run reports: its key, the unit printed and the scale to that unit.

``peak_gb`` is MLX's peak of memory in use; ``cache_gb`` what its buffer cache holds once the
run ends (freed buffers it keeps for reuse, which the device's memory holds too)."""
MARK = "bench_env: "
"""Starts the child's protocol lines (the libraries may print lines of their own)."""


def ratio(value: float, base: float) -> float:
    """``value / base``; an empty buffer cache against another is 1, anything against it inf."""
    if base:
        return value / base
    return 1.0 if value == base else math.inf


def parse_setting(text: str) -> dict[str, str]:
    """``"A=1,B=2"`` as ``{"A": "1", "B": "2"}``."""
    pairs = [part.partition("=") for part in text.split(",") if part]
    if not pairs or any(not name or not sep for name, sep, _ in pairs):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,NAME=VALUE...], got {text!r}")
    return {name: value for name, _, value in pairs}


def child(args: argparse.Namespace) -> None:
    """One measured process: load, then answer each ``tokens`` line with one timed run.

    A run reports its tokens after the first, the seconds from the first token to the last,
    the time to the first token and MLX's peak memory during it.
    """
    import random
    import time

    import mlx.core as mx

    from bench.bench_overhead import PROMPT, engine_options

    path = bench_model(args.shape, args.dtype, args.bits)
    draw = random.Random(0)
    ids = [draw.randrange(1000, 30000) for _ in range(args.prompt_tokens)]
    if args.side == "raw":
        import mlx_lm

        model, tokenizer = mlx_lm.load(str(path))
        prompt = ids or tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)

        def once(tokens: int) -> dict[str, float]:
            start = time.perf_counter()
            first = 0.0
            count = prompt_tokens = 0
            for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
                first = first or time.perf_counter()
                count, prompt_tokens = response.generation_tokens, response.prompt_tokens
            end = time.perf_counter()
            return {
                "tokens": count - 1,
                "wall": end - first,
                "ttft": first - start,
                "prompt_tokens": prompt_tokens,
            }

    else:
        import mlxnb

        engine = mlxnb.load(path, **engine_options(args))

        async def consume(tokens: int) -> dict[str, float]:
            first = 0.0
            done = None
            async for event in engine.stream(PROMPT, prompt=ids or None, max_tokens=tokens):
                first = first or time.perf_counter()
                if isinstance(event, mlxnb.Done):
                    done = event
            assert done is not None and done.usage.time_to_first_token is not None
            wall = time.perf_counter() - first
            usage = done.usage
            return {
                "tokens": usage.completion_tokens - 1,
                "wall": wall,
                "ttft": usage.time_to_first_token,
                "prompt_tokens": usage.prompt_tokens,
            }

        def once(tokens: int) -> dict[str, float]:
            return asyncio.run(consume(tokens))

    print(MARK + json.dumps({name: os.environ.get(name) for name in args.names}), flush=True)
    for line in sys.stdin:
        mx.reset_peak_memory()
        result = once(int(line))
        result["peak_gb"] = mx.get_peak_memory() / 1e9
        result["cache_gb"] = mx.get_cache_memory() / 1e9
        print(MARK + json.dumps(result), flush=True)


class Side:
    """A child process under one setting."""

    def __init__(self, name: str, env: dict[str, str], args: argparse.Namespace) -> None:
        self.name = name
        base = {k: v for k, v in os.environ.items() if k not in args.names}
        argv = [sys.executable, "-m", "bench.bench_env", "--child", "--side", args.side]
        argv += [f"--name={name}" for name in args.names]
        argv += ["--shape", args.shape, "--dtype", args.dtype]
        argv += ["--prompt-tokens", str(args.prompt_tokens)]
        if args.bits is not None:
            argv += ["--bits", str(args.bits)]
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**base, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.runs: list[dict[str, float]] = []
        self.prompt_tokens = 0  # as the last run reported it
        self.environment: dict[str, str | None] = {}

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def _answer(self) -> str:
        """The child's next protocol line, skipping anything else it printed."""
        _, out = self._pipes()
        for line in out:
            if line.startswith(MARK):
                return line[len(MARK) :].strip()
        raise RuntimeError(f"{self.name}: the child ended (exit {self.process.wait()})")

    def wait_ready(self) -> None:
        """Block until the child has loaded its model; keep the variables it was started with."""
        self.environment = json.loads(self._answer())

    def run(self, tokens: int) -> dict[str, float]:
        """One timed generation in the child: tokens/s, time to first token, peak memory."""
        inp, _ = self._pipes()
        inp.write(f"{tokens}\n")
        inp.flush()
        result = json.loads(self._answer())
        self.prompt_tokens = int(result["prompt_tokens"])
        rate = result["tokens"] / result["wall"]
        return {
            "tokens_per_s": rate,
            "ttft_s": result["ttft"],
            "peak_gb": result["peak_gb"],
            "cache_gb": result["cache_gb"],
        }

    def close(self) -> None:
        """End the child."""
        inp, out = self._pipes()
        inp.close()
        self.process.wait(timeout=60)
        out.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate rounds over every setting's process; print and return the ratios."""
    bench_model(args.shape, args.dtype, args.bits)  # built once, before the children load it
    settings = {DEFAULTS: {}, **{",".join(f"{k}={v}" for k, v in s.items()): s for s in args.set}}
    sides = [Side(name, env, args) for name, env in settings.items()]
    try:
        for side in sides:
            side.wait_ready()
        for side in sides:
            for _ in range(args.warmup):
                side.run(args.tokens)
        for round_ in range(args.rounds):
            shift = round_ % len(sides)
            for side in sides[shift:] + sides[:shift]:
                side.runs.append(side.run(args.tokens))
    finally:
        for side in sides:
            side.close()
    prompt = f"a {args.prompt_tokens}-token prompt" if args.prompt_tokens else "a chat prompt"
    print(
        f"lone stream ({args.side}), shape {args.shape} {args.dtype}"
        f"{'' if args.bits is None else f' {args.bits}-bit'}, {prompt}, {args.tokens} tokens, "
        f"{args.rounds} rounds; median, and [min, max] of the per-round ratios to the defaults"
    )
    figures: dict[str, Any] = {}
    width = max(len(side.name) for side in sides)
    for side in sides:
        figures[side.name] = {}
        line = f"  {side.name:<{width}}"
        for metric, unit, scale in METRICS:
            values = [run[metric] for run in side.runs]
            ratios = [
                ratio(a[metric], b[metric]) for a, b in zip(side.runs, sides[0].runs, strict=True)
            ]
            figures[side.name][metric] = figure(f"{side.name}: {metric}", values, unit=unit)
            figures[side.name][f"{metric}_vs_defaults"] = figure(
                f"{side.name} ÷ defaults: {metric}", ratios, unit="x"
            )
            line += (
                f"  {statistics.median(values) * scale:8.2f} {unit} "
                f"({statistics.median(ratios):.3f} [{min(ratios):.2f}, {max(ratios):.2f}])"
            )
        print(line)
    environments = {side.name: side.environment for side in sides}
    prompts = {side.name: side.prompt_tokens for side in sides}
    return {"environments": environments, "prompt_tokens": prompts, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=parse_setting, action="append", default=[])
    parser.add_argument("--side", choices=["raw", "engine"], default="raw")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--bits", type=int, default=None, help="quantise the model (e.g. 4)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=0,
        help="a prompt of this many (random) tokens instead of a short chat prompt",
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", dest="names", action="append", default=[], help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    if not args.set:
        parser.error("name at least one --set NAME=VALUE to compare with MLX's defaults")
    args.names = sorted({name for setting in args.set for name in setting})  # the children's
    report = new_report("env", args)
    with human_output(args.json):
        results = measure(args)
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
