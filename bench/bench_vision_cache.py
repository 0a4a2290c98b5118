"""Vision prompt cache: the next turn about an image, from the cache against computed cold.

A conversation about a picture resends the picture with every turn. With the prompt cache, a
lone request's KV is filed under its tokens with each image's placeholders standing for the
image's digest, so the next turn about the same picture prefills only what is new, and Qwen-VL
models skip the vision tower when the cache holds every image. In alternating pairs, on the
same random-weight Qwen3-VL model, each pair with a fresh picture:

- **warm**: an engine with its prompt cache asks the first question, then (timed) the second
  turn, whose prompt holds the first question, the picture and the first answer;
- **cold**: an engine without a prompt cache is asked the same second turn (timed).

Both decode greedily; the figures are each side's time to the second turn's first token (from
the call: chat template, image preprocessing and the vision tower included), their ratio per
pair, and the second turn's cached tokens. The second turn's history holds a fixed first answer,
so both sides are asked the same prompt; the warm side's cache serves it up to that answer.

Then a second turn that adds a picture, on a Qwen2.5-VL model of the same shape (its prompt
embedding takes kept per-image tower outputs; Qwen3-VL's does not): the prompt cache serves the
first turn, and the tower runs again on the first picture unless its output was kept. Both
engines keep prompt caches; **kept** keeps tower outputs per image (the default), **rerun**
keeps none. Timed: the second turn's first token, alternating.

Run: ``python -m bench.bench_vision_cache [--shape mid] [--pairs 6] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from PIL import Image

import mlxnb
from bench.bench_vision import QUESTION, asking, picture
from bench.models import VISION_SHAPES, bench_vision_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from mlxnb._engine.image_features import ImageFeatures

ANSWER = (
    "It is a square of coloured noise: red, green and blue dots scattered evenly, with no shape "
    "standing out, like the static of an old television set seen up close."
)
SECOND = "Which colour comes up most often, and where in the picture?"
OPTIONS: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0, "enable_thinking": False}


def first_turn(image: Image.Image) -> list[dict[str, Any]]:
    return asking(QUESTION, image)


def second_turn(image: Image.Image) -> list[dict[str, Any]]:
    return [
        *first_turn(image),
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": SECOND},
    ]


def time_to_first_token(engine: mlxnb.Engine, messages: list[dict[str, Any]]) -> tuple[float, int]:
    """Seconds from the call to the first event, and the turn's cached prompt tokens."""
    start = time.perf_counter()
    first = None
    done = None
    for event in engine.stream_sync(messages, **OPTIONS):
        first = first or time.perf_counter()
        if isinstance(event, mlxnb.Done):
            done = event
    assert first is not None and done is not None
    return first - start, done.usage.cached_tokens


def measure(args: argparse.Namespace) -> dict[str, Any]:
    path = bench_vision_model(args.shape)
    warm = mlxnb.load(path, audit=False)
    cold = mlxnb.load(path, audit=False, prompt_cache_size=0)
    warm_s: list[float] = []
    cold_s: list[float] = []
    cached: list[int] = []
    prompt_tokens = cold.count_tokens(
        second_turn(picture(0, args.image_side)), enable_thinking=False
    )
    for pair in range(args.pairs + 1):  # the first pair warms both up and is not counted
        image = picture(pair + 1, args.image_side)
        warm.generate(first_turn(image), **OPTIONS)
        sides = [("warm", warm), ("cold", cold)]
        for name, engine in sides if pair % 2 else sides[::-1]:
            seconds, hit = time_to_first_token(engine, second_turn(image))
            if pair:
                (warm_s if name == "warm" else cold_s).append(seconds)
                if name == "warm":
                    cached.append(hit)
    warm.close()
    cold.close()
    ratios = [c / w for c, w in zip(cold_s, warm_s, strict=True)]
    print(
        f"vision prompt cache, shape {args.shape}, {args.image_side}px picture, second turn of "
        f"{prompt_tokens} tokens, {args.pairs} pairs:"
    )
    print(
        f"  time to first token: warm {1e3 * statistics.median(warm_s):.0f} ms, "
        f"cold {1e3 * statistics.median(cold_s):.0f} ms; cold ÷ warm "
        f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]; "
        f"cached tokens {statistics.median(cached):.0f}"
    )
    return {
        "figures": {
            "cold_over_warm_ttft": figure(
                "vision, next turn about the same picture: time to first token cold ÷ warm",
                ratios,
                unit="x",
            ),
            "warm_ttft_ms": figure(
                "  warm (from the prompt cache)", [1e3 * s for s in warm_s], unit="ms"
            ),
            "cold_ttft_ms": figure("  cold (computed)", [1e3 * s for s in cold_s], unit="ms"),
            "cached_tokens": figure(
                "  cached tokens of the warm turn", [float(c) for c in cached], unit="tokens"
            ),
        },
        "prompt_tokens": prompt_tokens,
    }


def adding_turn(first: Image.Image, second: Image.Image) -> list[dict[str, Any]]:
    return [
        *first_turn(first),
        {"role": "assistant", "content": ANSWER},
        asking("And this one: how does it differ?", second)[0],
    ]


def measure_added_picture(args: argparse.Namespace) -> dict[str, Any]:
    """The second turn that adds a picture, kept tower outputs against none (see above)."""
    path = bench_vision_model(args.shape, arch="qwen2_5_vl")
    # Engines of their own: mlxnb.load would hand both calls the kernel's one engine.
    kept = mlxnb.Engine(path, audit=False, name="kept")
    rerun = mlxnb.Engine(path, audit=False, name="rerun")
    rerun.wait_ready()
    rerun._worker.backend.image_features = ImageFeatures(max_bytes=0)
    kept_s: list[float] = []
    rerun_s: list[float] = []
    for pair in range(args.pairs + 1):  # the first pair warms both up and is not counted
        old, new = (picture(2 * pair + seed, args.image_side) for seed in (101, 102))
        sides = [("kept", kept), ("rerun", rerun)]
        for name, engine in sides if pair % 2 else sides[::-1]:
            engine.generate(first_turn(old), **OPTIONS)
            seconds, _ = time_to_first_token(engine, adding_turn(old, new))
            if pair:
                (kept_s if name == "kept" else rerun_s).append(seconds)
    kept.close()
    rerun.close()
    ratios = [r / k for r, k in zip(rerun_s, kept_s, strict=True)]
    print(
        f"  a turn adding a second picture (Qwen2.5-VL): kept {1e3 * statistics.median(kept_s):.0f}"
        f" ms, tower rerun {1e3 * statistics.median(rerun_s):.0f} ms; rerun ÷ kept "
        f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"
    )
    return {
        "rerun_over_kept_ttft": figure(
            "vision, a turn adding a picture: time to first token, tower rerun ÷ outputs kept",
            ratios,
            unit="x",
        ),
        "kept_ttft_ms": figure("  kept", [1e3 * s for s in kept_s], unit="ms"),
        "rerun_ttft_ms": figure("  rerun", [1e3 * s for s in rerun_s], unit="ms"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(VISION_SHAPES), default="mid")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--image-side", type=int, default=256, help="pixels")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("vision_cache", args)
    with human_output(args.json):
        results = measure(args)
        results["figures"].update(measure_added_picture(args))
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
