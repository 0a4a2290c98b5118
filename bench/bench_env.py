"""MLX settings read once per process, A/B: one warm process per setting, rounds alternating.

MLX reads some environment variables once, at its first use (``MLX_MAX_OPS_PER_BUFFER``,
``MLX_CUDA_USE_CUDNN_SDPA``, ...), so two values cannot be compared inside one process. This
bench starts one process per setting (the first with none of them: MLX's defaults), loads the
model in each, warms each up, then times a lone greedy stream in each in turn, the order
rotating every round, and prints each setting's tokens/s ÷ the defaults' in the same round.

``--side raw`` times ``mlx_lm.stream_generate``; ``--side engine`` times ``engine.stream``
(whose engine may set some of these variables itself, unless the setting names them).

Run: ``python -m bench.bench_env --set MLX_MAX_OPS_PER_BUFFER=100 [--set ...] [--rounds 12]
[--shape tiny] [--dtype bfloat16] [--bits 4] [--side raw|engine] [--json PATH]``. A setting may
hold several variables, comma-separated: ``--set A=1,B=2``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from typing import IO, Any

from bench.models import SHAPES, bench_model
from bench.report import REPO, add_json_argument, figure, human_output, new_report, write_report

DEFAULTS = "defaults"
MARK = "bench_env: "
"""Starts the child's protocol lines (the libraries may print lines of their own)."""


def parse_setting(text: str) -> dict[str, str]:
    """``"A=1,B=2"`` as ``{"A": "1", "B": "2"}``."""
    pairs = [part.partition("=") for part in text.split(",") if part]
    if not pairs or any(not name or not sep for name, sep, _ in pairs):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,NAME=VALUE...], got {text!r}")
    return {name: value for name, _, value in pairs}


def child(args: argparse.Namespace) -> None:
    """One measured process: load, then answer each ``tokens`` line with one timed run."""
    from bench.bench_overhead import engine_options, engine_run, raw_run

    path = bench_model(args.shape, args.dtype, args.bits)
    if args.side == "raw":
        import mlx_lm

        model, tokenizer = mlx_lm.load(str(path))

        def once(tokens: int) -> Any:
            return raw_run(model, tokenizer, tokens)

    else:
        import mlxnb

        engine = mlxnb.load(path, **engine_options(args))

        def once(tokens: int) -> Any:
            return asyncio.run(engine_run(engine, tokens))

    print(MARK + json.dumps({name: os.environ.get(name) for name in args.names}), flush=True)
    for line in sys.stdin:
        run = once(int(line))
        print(MARK + json.dumps({"tokens": run.tokens, "wall": run.wall}), flush=True)


class Side:
    """A child process under one setting."""

    def __init__(self, name: str, env: dict[str, str], args: argparse.Namespace) -> None:
        self.name = name
        base = {k: v for k, v in os.environ.items() if k not in args.names}
        argv = [sys.executable, "-m", "bench.bench_env", "--child", "--side", args.side]
        argv += [f"--name={name}" for name in args.names]
        argv += ["--shape", args.shape, "--dtype", args.dtype]
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
        self.tokens_per_s: list[float] = []
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

    def run(self, tokens: int) -> float:
        """One timed generation in the child; its tokens/s."""
        inp, _ = self._pipes()
        inp.write(f"{tokens}\n")
        inp.flush()
        result = json.loads(self._answer())
        return float(result["tokens"] / result["wall"])

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
                side.tokens_per_s.append(side.run(args.tokens))
    finally:
        for side in sides:
            side.close()
    base = sides[0].tokens_per_s
    print(
        f"lone stream ({args.side}), shape {args.shape} {args.dtype}"
        f"{'' if args.bits is None else f' {args.bits}-bit'}, {args.tokens} tokens, "
        f"{args.rounds} rounds (median [min, max])"
    )
    figures: dict[str, Any] = {}
    width = max(len(side.name) for side in sides)
    for side in sides:
        rate = side.tokens_per_s
        ratios = [a / b for a, b in zip(rate, base, strict=True)]
        figures[side.name] = {
            "tokens_per_s": figure(f"{side.name}: tokens/s", rate, unit="tok/s"),
            "vs_defaults": figure(f"{side.name} ÷ defaults", ratios, unit="x"),
        }
        print(
            f"  {side.name:<{width}} {statistics.median(rate):8.1f} tok/s  ÷ defaults "
            f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]"
        )
    environments = {side.name: side.environment for side in sides}
    return {"environments": environments, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=parse_setting, action="append", default=[])
    parser.add_argument("--side", choices=["raw", "engine"], default="raw")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--bits", type=int, default=None, help="quantise the model (e.g. 4)")
    parser.add_argument("--tokens", type=int, default=256)
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
