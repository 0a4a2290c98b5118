"""Vision: the engine against raw mlx-vlm with an image, and evaluate() over image rows.

Compares, on the same random-weight Qwen3-VL model, prompt, image and token count:
1. single stream with an image: ``engine.stream`` tokens/s ÷ raw ``mlx_vlm.stream_generate``
   tokens/s, in alternating pairs after warm-up, and each side's time to first token (from the
   call, chat template and image preprocessing included);
2. ``evaluate()`` over ``--rows`` image rows ÷ a sequential loop of ``engine.generate`` over the
   same rows (each row its own image, so nothing is shared).

Both sides decode greedily with the same logits processor, which bans end-of-sequence: random
weights may otherwise stop early, and every run makes exactly ``--tokens`` tokens.

Run: ``make bench`` or ``python -m bench.bench_vision --shape mid [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import mlx_vlm
import numpy as np
import pandas as pd
from mlx_vlm.prompt_utils import apply_chat_template
from PIL import Image

import mlxnb
from bench.models import VISION_SHAPES, bench_vision_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

QUESTION = "Describe this picture in detail: the colours, the shapes and what it might show."
IMAGE_SIDE = 256  # pixels; the processor scales it to the model's image-token budget


class BanTokens:
    """A stateless logits processor that makes some tokens impossible (here: end-of-sequence).

    The bias vector is built on first use, on the thread that decodes (MLX arrays belong to the
    thread that makes them; the engine decodes on its worker thread).
    """

    def __init__(self, token_ids: Iterable[int]) -> None:
        self.token_ids = sorted(set(token_ids))
        self._bias: Any = None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        if self._bias is None:
            bias = np.zeros(logits.shape[-1], dtype=np.float32)
            bias[self.token_ids] = -np.inf
            self._bias = mx.array(bias).astype(logits.dtype)
        return logits + self._bias


@dataclass(frozen=True)
class Run:
    """One generation: decode tokens/s (after the first token), time to first token, tokens."""

    tps: float
    ttft: float
    tokens: int
    prompt_tokens: int


def picture(seed: int, side: int = IMAGE_SIDE) -> Image.Image:
    """A reproducible noise image (its content does not matter to a random-weight model)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def asking(text: str, image: Image.Image) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": text}],
        }
    ]


def raw_run(model: Any, processor: Any, image: Image.Image, tokens: int, ban: BanTokens) -> Run:
    start = time.perf_counter()
    # Rendering the prompt is part of the work both sides do before the first token.
    prompt = apply_chat_template(processor, model.config, QUESTION, num_images=1)
    first = None
    last: Any = None
    for response in mlx_vlm.stream_generate(
        model,
        processor,
        prompt,
        image=[image],
        max_tokens=tokens,
        temperature=0.0,
        logits_processors=[ban],
    ):
        first = first or time.perf_counter()
        last = response
    end = time.perf_counter()
    assert first is not None and last is not None
    count = last.generation_tokens
    return Run(count / (end - first), first - start, count, last.prompt_tokens)


async def ours_run(engine: mlxnb.Engine, image: Image.Image, tokens: int, ban: BanTokens) -> Run:
    start = time.perf_counter()
    first = None
    done = None
    async for event in engine.stream(
        asking(QUESTION, image),
        enable_thinking=False,  # mlx-vlm's apply_chat_template renders the empty think block too
        max_tokens=tokens,
        temperature=0.0,
        logits_processors=[ban],
    ):
        first = first or time.perf_counter()
        if isinstance(event, mlxnb.Done):
            done = event
    end = time.perf_counter()
    assert first is not None and done is not None
    count = done.usage.completion_tokens
    return Run(count / (end - first), first - start, count, done.usage.prompt_tokens)


def sequential_run(
    engine: mlxnb.Engine, prompts: list[str], images: list[Image.Image], tokens: int, ban: BanTokens
) -> tuple[float, int]:
    start = time.perf_counter()
    count = 0
    for prompt, image in zip(prompts, images, strict=True):
        turn = engine.generate(
            asking(prompt, image),
            enable_thinking=False,
            max_tokens=tokens,
            temperature=0.0,
            logits_processors=[ban],
        )
        count += turn.usage.completion_tokens
    return time.perf_counter() - start, count


def evaluate_run(
    engine: mlxnb.Engine, frame: pd.DataFrame, tokens: int, concurrency: int, ban: BanTokens
) -> tuple[float, int]:
    start = time.perf_counter()
    result = mlxnb.evaluate(
        frame,
        model=engine,
        images="image",
        enable_thinking=False,
        max_tokens=tokens,
        temperature=0.0,
        logits_processors=[ban],
        concurrency=concurrency,
        progress=False,
    )
    elapsed = time.perf_counter() - start
    errors = result["error"].dropna()
    if len(errors):
        raise RuntimeError(f"evaluate() rows failed: {errors.iloc[0]}")
    return elapsed, int(result["completion_tokens"].sum())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run both comparisons, print the table and return the raw numbers and figures."""
    import mlx.core as mx

    path = bench_vision_model(args.shape, args.dtype)
    solo = {"on": True, "off": False}[args.solo]
    engine = mlxnb.load(path, audit=False, prompt_cache_size=0, solo_fast_path=solo)
    # mlx-vlm's own load of the same directory for the raw baseline (same thread as its runs).
    model, processor = mlx_vlm.load(str(path))
    eos = engine.tokenizer.eos_token_ids
    raw_ban, our_ban = BanTokens(eos), BanTokens(eos)
    image = picture(0)

    # 1. One stream with an image, alternating pairs after one warm-up run each.
    raw_run(model, processor, image, 8, raw_ban)
    asyncio.run(ours_run(engine, image, 8, our_ban))
    raw: list[Run] = []
    ours: list[Run] = []
    for _ in range(args.repeats):
        raw.append(raw_run(model, processor, image, args.tokens, raw_ban))
        ours.append(asyncio.run(ours_run(engine, image, args.tokens, our_ban)))

    # 2. evaluate() over image rows against a sequential loop over the same rows.
    prompts = [f"Picture {i}: {QUESTION}" for i in range(args.rows)]
    images = [picture(1 + i) for i in range(args.rows)]
    frame = pd.DataFrame({"prompt": prompts, "image": images})
    # Warm up the batched path as well (MLX's GPU backends compile kernels per shape).
    evaluate_run(engine, frame.head(min(args.concurrency, args.rows)), 4, args.concurrency, our_ban)
    evaluations: list[dict[str, float]] = []
    for _ in range(args.eval_repeats):
        seq_s, seq_tokens = sequential_run(engine, prompts, images, args.tokens, our_ban)
        eval_s, eval_tokens = evaluate_run(engine, frame, args.tokens, args.concurrency, our_ban)
        evaluations.append(
            {
                "sequential_s": seq_s,
                "sequential_tokens": seq_tokens,
                "evaluate_s": eval_s,
                "evaluate_tokens": eval_tokens,
            }
        )
    engine.close()

    measured = results(args, raw, ours, evaluations)
    figures = measured["figures"]
    raw_prompt = {run.prompt_tokens for run in raw}
    our_prompt = {run.prompt_tokens for run in ours}
    print(
        f"\nvision benchmark — shape {args.shape} {args.dtype} on {mx.default_device()}, "
        f"{IMAGE_SIDE}x{IMAGE_SIDE} image, {args.tokens} tokens, {args.repeats} pairs "
        f"(median), {args.rows} rows x {args.eval_repeats}, concurrency {args.concurrency}, "
        f"solo {args.solo}, {mlxnb.__version__}"
    )
    rows = [
        ("raw mlx_vlm.stream_generate tokens/s", _median_spread(figures["raw_tps"], ".1f")),
        ("engine.stream tokens/s", _median_spread(figures["engine_tps"], ".1f")),
        ("ratio engine ÷ raw (target ≥ 0.97)", _median_spread(figures["engine_vs_raw"], ".3f")),
        ("raw time to first token (ms)", _median_spread(figures["raw_ttft_ms"], ".1f")),
        ("engine time to first token (ms)", _median_spread(figures["engine_ttft_ms"], ".1f")),
        ("TTFT overhead, engine - raw (ms)", f"{figures['ttft_overhead_ms']['value']:+.1f}"),
        (
            "prompt tokens raw / engine; tokens per run",
            f"{sorted(raw_prompt)} / {sorted(our_prompt)}; "
            f"{sorted({r.tokens for r in raw + ours})}",
        ),
        (
            f"sequential engine.generate loop, {args.rows} rows, tokens/s",
            _median_spread(figures["sequential_tps"], ".1f"),
        ),
        (
            f"mlxnb.evaluate, {args.rows} rows, tokens/s",
            _median_spread(figures["evaluate_tps"], ".1f"),
        ),
        (
            "ratio evaluate ÷ sequential (target ≥ 2)",
            _median_spread(figures["evaluate_vs_sequential"], ".2f"),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if raw_prompt != our_prompt:
        print("  warning: the two sides rendered prompts of different lengths")
    return measured


def _median_spread(fig: dict[str, Any], spec: str) -> str:
    """The printed value, with the runs' spread (max - min) when n > 1.

    A ratio of medians also shows the median of its per-pair ratios: each pair ran back to
    back, so that one moves less when the machine's load drifts during the run.
    """
    text = format(fig["value"], spec)
    if fig["n"] > 1:
        pairs = f"pairs' median {format(fig['median'], spec)}, " if fig["unit"] == "x" else ""
        text += f"  ({pairs}spread {format(fig['spread'], spec)}, n={fig['n']})"
    return text


def results(
    args: argparse.Namespace, raw: list[Run], ours: list[Run], evaluations: list[dict[str, float]]
) -> dict[str, Any]:
    """The raw numbers (one entry per pair / per evaluate repeat) and every printed figure.

    Ratios are printed as ratios of medians (``value``); their ``values`` are per-pair ratios.
    """
    raw_tps, our_tps = [r.tps for r in raw], [r.tps for r in ours]
    raw_ms, our_ms = [1000 * r.ttft for r in raw], [1000 * r.ttft for r in ours]
    seq_tps = [e["sequential_tokens"] / e["sequential_s"] for e in evaluations]
    eval_tps = [e["evaluate_tokens"] / e["evaluate_s"] for e in evaluations]
    runs = [
        {
            "raw_tps": r.tps,
            "engine_tps": o.tps,
            "raw_ttft_ms": 1000 * r.ttft,
            "engine_ttft_ms": 1000 * o.ttft,
            "raw_tokens": r.tokens,
            "engine_tokens": o.tokens,
            "raw_prompt_tokens": r.prompt_tokens,
            "engine_prompt_tokens": o.prompt_tokens,
        }
        for r, o in zip(raw, ours, strict=True)
    ]
    figures = {
        "raw_tps": figure("raw mlx_vlm.stream_generate tokens/s (image)", raw_tps, unit="tok/s"),
        "engine_tps": figure("engine.stream tokens/s (image)", our_tps, unit="tok/s"),
        "engine_vs_raw": figure(
            "ratio engine ÷ raw (image)",
            (o / r for o, r in zip(our_tps, raw_tps, strict=True)),
            unit="x",
            value=statistics.median(our_tps) / statistics.median(raw_tps),
            target=">= 0.97",
        ),
        "raw_ttft_ms": figure("raw time to first token (image)", raw_ms, unit="ms"),
        "engine_ttft_ms": figure("engine time to first token (image)", our_ms, unit="ms"),
        "ttft_overhead_ms": figure(
            "TTFT overhead, engine - raw (image)",
            (o - r for o, r in zip(our_ms, raw_ms, strict=True)),
            unit="ms",
            value=statistics.median(our_ms) - statistics.median(raw_ms),
        ),
        "sequential_tps": figure(
            f"sequential engine.generate loop, {args.rows} image rows, tokens/s",
            seq_tps,
            unit="tok/s",
        ),
        "evaluate_tps": figure(
            f"mlxnb.evaluate, {args.rows} image rows, tokens/s", eval_tps, unit="tok/s"
        ),
        "evaluate_vs_sequential": figure(
            "ratio evaluate ÷ sequential (image rows)",
            (e / s for e, s in zip(eval_tps, seq_tps, strict=True)),
            unit="x",
            value=statistics.median(eval_tps) / statistics.median(seq_tps),
            target=">= 2",
        ),
    }
    return {"runs": runs, "evaluate_runs": evaluations, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(VISION_SHAPES), default="mid")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs, part 1")
    parser.add_argument("--rows", type=int, default=16, help="image rows, part 2")
    parser.add_argument("--eval-repeats", type=int, default=1, help="loop/evaluate pairs, part 2")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--solo",
        choices=["on", "off"],
        default="on",
        help="a lone request on its own decoder (on, the engine's default) or in the batch (off)",
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("vision", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(report, measured, args.json)


if __name__ == "__main__":
    main()
