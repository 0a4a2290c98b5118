"""Prompt-lookup decoding: a lone stream with drafts against plain decoding and raw mlx-lm.

Two workloads, each in alternating runs after a warm-up, all greedy:

1. **own output**: the random model continues a code prompt on its own. Raw
   ``mlx_lm.stream_generate``, ``engine.stream`` and ``engine.stream(prompt_lookup=N)`` make
   the same tokens (checked), so their tokens/s compare directly. A random model repeats itself
   a lot, so drafts are accepted more often than with a real model: this is the best case.
2. **editing**: the model is made to answer with an edited copy of the code in its prompt (a
   stateless logits processor forces the script by position, as a model asked to rename a
   function would write it): drafts from the prompt hold until an edit, then recover. Engine
   with drafts ÷ engine without, both paying the same processor per token.

3. **draft model** (``--draft-bits 4``): the model's own output again, drafted for by its
   quantized twin (``mlxnb.load(model, draft_model=twin)``): engine with the draft model ÷ raw.

Run: ``python -m bench.bench_lookup [--shape mid] [--bits 4] [--draft-bits 4] [--pairs 12]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import mlx_lm

import mlxnb
from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

CODE = '''import math


def area(radius: float) -> float:
    """The area of a circle."""
    return math.pi * radius * radius


def circumference(radius: float) -> float:
    """The length of a circle's edge."""
    return 2 * math.pi * radius


class Circle:
    def __init__(self, radius: float) -> None:
        self.radius = radius

    def area(self) -> float:
        return area(self.radius)

    def circumference(self) -> float:
        return circumference(self.radius)
'''
EDITED = CODE.replace("circumference", "perimeter")
ASK = [
    {
        "role": "user",
        "content": f"Rename circumference to perimeter:\n```python\n{CODE}```",
    }
]
NO_THINKING = {"enable_thinking": False}


class FollowScript:
    """Forces ``script`` token by token, its position read from the context's length.

    It reads only its arguments (``stateless``), so drafts stay on; after the script it forces
    end-of-sequence.
    """

    stateless = True

    def __init__(self, script: list[int], prompt_tokens: int, eos: int) -> None:
        self.script = [*script, eos]
        self.prompt_tokens = prompt_tokens
        self._rows: dict[int, Any] = {}

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        position = min(int(tokens.shape[-1]) - self.prompt_tokens, len(self.script) - 1)
        target = self.script[max(position, 0)]
        keep = mx.arange(logits.shape[-1]) == target
        return mx.where(keep, logits, mx.array(-float("inf"), logits.dtype))


@dataclass(frozen=True)
class Run:
    """One generation: tokens/s after the first token, tokens, the answer, drafts."""

    tps: float
    tokens: int
    text: str
    drafted: int = 0
    accepted: int = 0


def raw_run(model: Any, tokenizer: Any, tokens: int) -> Run:
    prompt = tokenizer.apply_chat_template(ASK, add_generation_prompt=True, **NO_THINKING)
    first = 0.0
    text = ""
    count = 0
    for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        first = first or time.perf_counter()
        text += response.text
        count = response.generation_tokens
    return Run((count - 1) / (time.perf_counter() - first), count, text.strip())


async def engine_run(engine: mlxnb.Engine, tokens: int, lookup: int, **options: Any) -> Run:
    """One stream; tokens/s from the engine's own first and last token (as raw's: the
    parser holds back leading whitespace, so the first event can come late)."""
    text = ""
    done: mlxnb.Done | None = None
    async for event in engine.stream(
        ASK,
        max_tokens=tokens,
        temperature=0.0,
        prompt_lookup=lookup,
        chat_template_kwargs=NO_THINKING,
        **options,
    ):
        if isinstance(event, mlxnb.ContentDelta):
            text += event.text
        elif isinstance(event, mlxnb.Done):
            done = event
    assert done is not None
    usage = done.usage
    tps = usage.generation_tps or 0.0
    count = usage.completion_tokens
    return Run(tps, count, text.strip(), usage.draft_tokens, usage.accepted_draft_tokens)


def follow_edit(engine: mlxnb.Engine) -> FollowScript:
    tokenizer = engine.tokenizer
    prompt = tokenizer.apply_chat_template(ASK, add_generation_prompt=True, **NO_THINKING)
    script = tokenizer.encode(f"```python\n{EDITED}```", add_special_tokens=False)
    return FollowScript(script, len(prompt), min(tokenizer.eos_token_ids))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import mlx.core as mx

    path = bench_model(args.shape, args.dtype, bits=args.bits)
    model, tokenizer = mlx_lm.load(str(path))
    engine = mlxnb.load(path, audit=False, prompt_cache_size=0)
    lookup = args.draft_tokens
    # Warm-up: MLX compiles kernels per shape on first use (the drafts' widths included).
    raw_run(model, tokenizer, 16)
    for width in (0, lookup):
        asyncio.run(engine_run(engine, 32, width))
    own: dict[str, list[Run]] = {"raw": [], "plain": [], "lookup": []}
    for _ in range(args.pairs):
        own["raw"].append(raw_run(model, tokenizer, args.tokens))
        own["plain"].append(asyncio.run(engine_run(engine, args.tokens, 0)))
        own["lookup"].append(asyncio.run(engine_run(engine, args.tokens, lookup)))
    same = {run.text for runs in own.values() for run in runs}
    edit: dict[str, list[Run]] = {"plain": [], "lookup": []}
    for _ in range(args.pairs):
        for name, width in (("plain", 0), ("lookup", lookup)):
            follow = follow_edit(engine)
            run = asyncio.run(engine_run(engine, 4096, width, logits_processors=[follow]))
            edit[name].append(run)
    engine.close()
    edited = {run.text.strip() for runs in edit.values() for run in runs}
    drafted: list[Run] = []
    if args.draft_bits:
        twin = bench_model(args.shape, args.dtype, bits=args.draft_bits)
        with mlxnb.load(path, audit=False, prompt_cache_size=0, draft_model=twin) as speculative:
            asyncio.run(engine_run(speculative, 32, 0))
            for _ in range(args.pairs):
                drafted.append(asyncio.run(engine_run(speculative, args.tokens, 0)))
                raw_again = raw_run(model, tokenizer, args.tokens)
                own.setdefault("raw_beside_draft", []).append(raw_again)

    def ratios(a: list[Run], b: list[Run]) -> list[float]:
        return [x.tps / y.tps for x, y in zip(a, b, strict=True)]

    def acceptance(runs: list[Run]) -> float:
        return sum(r.accepted for r in runs) / max(sum(r.drafted for r in runs), 1)

    figures = {
        "own_lookup_vs_raw": figure(
            "own output: engine with drafts ÷ raw stream_generate",
            ratios(own["lookup"], own["raw"]),
            unit="x",
            target=">= 1",
        ),
        "own_plain_vs_raw": figure(
            "own output: engine without drafts ÷ raw", ratios(own["plain"], own["raw"]), unit="x"
        ),
        "own_acceptance": figure(
            "own output: drafts accepted", [acceptance(own["lookup"])], unit="fraction"
        ),
        "edit_lookup_vs_plain": figure(
            "editing: engine with drafts ÷ without",
            ratios(edit["lookup"], edit["plain"]),
            unit="x",
            target="> 1",
        ),
        "edit_acceptance": figure(
            "editing: drafts accepted", [acceptance(edit["lookup"])], unit="fraction"
        ),
        "edit_tokens_per_call": figure(
            "editing: tokens per model call with drafts",
            [r.tokens / max(r.tokens - r.accepted, 1) for r in edit["lookup"]],
            unit="tokens",
        ),
    }
    if drafted:
        figures["draft_vs_raw"] = figure(
            f"draft model ({args.draft_bits}-bit twin) ÷ raw",
            ratios(drafted, own["raw_beside_draft"]),
            unit="x",
            target="> 1",
        )
        figures["draft_acceptance"] = figure(
            "draft model: drafts accepted", [acceptance(drafted)], unit="fraction"
        )
    print(
        f"\nprompt-lookup benchmark — shape {args.shape} {args.dtype}"
        f"{f' {args.bits}-bit' if args.bits else ''} on {mx.default_device()}, "
        f"{args.pairs} alternating runs, {lookup} draft tokens, {mlxnb.__version__}"
    )
    texts = {side: {run.text for run in runs} for side, runs in own.items()}
    agree = ", ".join(
        f"{side} {'==' if texts[side] == texts['raw'] else '!='} raw"
        for side in ("plain", "lookup")
    )
    print(f"  own output ({args.tokens} tokens; {agree}; {len(same)} distinct texts)")
    for name in ("raw", "plain", "lookup"):
        print(f"    {name:<7} {statistics.median(r.tps for r in own[name]):8.1f} tok/s")
    for key in ("own_lookup_vs_raw", "own_plain_vs_raw", "own_acceptance"):
        print(f"    {figures[key]['label']:<52} {figures[key]['value']:.3f}")
    tokens = edit["lookup"][0].tokens
    print(f"  editing ({tokens} tokens; the edited script exactly: {edited == {EDITED_BLOCK}})")
    for name in ("plain", "lookup"):
        print(f"    {name:<7} {statistics.median(r.tps for r in edit[name]):8.1f} tok/s")
    for key in ("edit_lookup_vs_plain", "edit_acceptance", "edit_tokens_per_call"):
        print(f"    {figures[key]['label']:<52} {figures[key]['value']:.3f}")
    if drafted:
        same_draft = {r.text for r in drafted} <= same
        print(f"  draft model ({args.tokens} tokens; same text as plain: {same_draft})")
        for key in ("draft_vs_raw", "draft_acceptance"):
            print(f"    {figures[key]['label']:<52} {figures[key]['value']:.3f}")
    sides = {**{f"own_{k}": v for k, v in own.items()}, **edit, "draft": drafted}
    runs = {side: [r.__dict__ | {"text": None} for r in runs] for side, runs in sides.items()}
    return {"runs": runs, "figures": figures}


EDITED_BLOCK = f"```python\n{EDITED}```".strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--bits", type=int, choices=[4, 8], default=None, help="quantize")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per own-output run")
    parser.add_argument("--pairs", type=int, default=6, help="alternating runs per side")
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument(
        "--draft-bits", type=int, choices=[4, 8], default=None, help="draft-model workload"
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("lookup", args)
    with human_output(args.json):
        measured = measure(args)
    write_report(report, measured, args.json)


if __name__ == "__main__":
    main()
