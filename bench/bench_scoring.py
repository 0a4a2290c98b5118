"""Evaluation depth: scoring, seeds and shared prefills, each beside its plain counterpart.

Three ratios, in one run, on a random-weight model (speed does not depend on the weights):

1. **multiple choice**: ``evaluate(choices=…)`` over ``--rows`` four-choice rows (the context
   prefilled once, its choices read in one batched call) ÷ a sequential loop of single forward
   passes over context + choice, one per choice, as a naive harness scores them;
2. **seeds**: a sampled ``evaluate()`` with ``seed=`` (per-request keys) ÷ the same run unseeded;
3. **one prefill for n samples**: ``evaluate(n=8)`` on a ~1 000-token prompt (the samples wait
   for the first one's prefix) ÷ eight separate requests for the same prompt, all at once.

Run: ``python -m bench.bench_scoring [--shape mid] [--only choices] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import mlx.core as mx
import mlx_lm
import pandas as pd

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

CHOICES = [" red", " a bright green colour", " blue, like the sea", " none of these"]


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def naive_scores(model: Any, tokenizer: Any, quiz: pd.DataFrame) -> None:
    """One forward pass over context + choice per choice, nothing shared or batched."""
    for prompt, options in zip(quiz["prompt"], quiz["options"], strict=True):
        context = tokenizer.encode(prompt)
        for option in options:
            ids = tokenizer.encode(option, add_special_tokens=False)
            logits = model(mx.array([*context, *ids])[None])[0]
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            rows = logprobs[len(context) - 1 : len(context) - 1 + len(ids)]
            mx.eval(rows[mx.arange(len(ids)), mx.array(ids)].sum())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    path = bench_model(args.shape)
    engine = mlxnb.load(path, audit=False, prompt_cache_size=4)
    model, tokenizer = mlx_lm.load(str(path))
    quiz = pd.DataFrame(
        {
            "prompt": [
                f"Question {i}: what colour is the sky over the sea?" for i in range(args.rows)
            ],
            "options": [CHOICES] * args.rows,
        }
    )
    prompts = [f"Write about topic {i}." for i in range(args.rows)]
    long_prompt = "Read this long document carefully. " * 140  # ~1 000 tokens
    # Warm-up of every path.
    naive_scores(model, tokenizer, quiz.head(2))
    mlxnb.evaluate(quiz.head(2), model=engine, choices="options", progress=False)
    mlxnb.evaluate(prompts[:4], model=engine, max_tokens=4, temperature=1.0, progress=False)
    choices_only = args.only == "choices"

    runs: dict[str, list[float]] = {
        k: [] for k in ("naive", "scored", "unseeded", "seeded", "separate", "forked")
    }
    quiet = {"progress": False}
    for _ in range(args.repeats):
        runs["naive"].append(timed(partial(naive_scores, model, tokenizer, quiz)))
        scored = partial(mlxnb.evaluate, quiz, model=engine, choices="options", **quiet)
        runs["scored"].append(timed(scored))
        if choices_only:
            continue
        sampled = partial(
            mlxnb.evaluate, prompts, model=engine, max_tokens=args.tokens, temperature=1.0, **quiet
        )
        runs["unseeded"].append(timed(sampled))
        runs["seeded"].append(timed(partial(sampled, seed=7)))
        for side, asked, n in (("separate", [long_prompt] * 8, 1), ("forked", [long_prompt], 8)):
            engine.close()  # each side starts from an empty prompt cache
            engine = mlxnb.load(path, audit=False, prompt_cache_size=4)
            run = partial(mlxnb.evaluate, asked, model=engine, n=n, max_tokens=8, **quiet)
            runs[side].append(timed(run))
    engine.close()

    def speedup(slow: str, fast: str) -> list[float]:
        return [s / f for s, f in zip(runs[slow], runs[fast], strict=True)]

    if choices_only:
        runs = {name: runs[name] for name in ("naive", "scored")}

    figures = {
        "choices_vs_naive": figure(
            f"multiple choice, {args.rows} rows x 4: evaluate(choices=) ÷ naive passes",
            speedup("naive", "scored"),
            unit="x",
            target=">= 3",
        ),
    }
    if not choices_only:
        figures.update(seeded_and_forked(runs, speedup))
    print(
        f"\nscoring benchmark — shape {args.shape} on {mx.default_device()}, "
        f"{args.repeats} repeats, {mlxnb.__version__}"
    )
    for name, values in runs.items():
        print(f"  {name:<9} {statistics.median(values):8.2f} s")
    for fig in figures.values():
        print(f"  {fig['label']:<70} {fig['value']:.2f}")
    return {"runs": runs, "figures": figures}


def seeded_and_forked(
    runs: dict[str, list[float]], speedup: Callable[[str, str], list[float]]
) -> dict[str, Any]:
    """The seeds and shared-prefill figures (every part of the bench but multiple choice)."""
    return {
        "seeded_vs_unseeded": figure(
            "sampled evaluate: seeded time ÷ unseeded time",
            [s / u for s, u in zip(runs["seeded"], runs["unseeded"], strict=True)],
            unit="x",
            target="<= 1.1",
        ),
        "forked_vs_separate": figure(
            "n=8 on a ~1 000-token prompt ÷ eight separate requests",
            speedup("separate", "forked"),
            unit="x",
            target=">= 2",
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per sampled row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only", choices=["choices"], default=None, help="measure multiple choice alone"
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("scoring", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(report, measured, args.json)


if __name__ == "__main__":
    main()
