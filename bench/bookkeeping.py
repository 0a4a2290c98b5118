"""The engine's Python per token with the model taken out: what it adds to raw mlx-lm's own.

On a device where a small model is launch-bound, every microsecond of Python between two steps
on the thread that launches them adds to each token; timing whole generations there cannot
resolve a few microseconds (the machine moves more than that). Here the model call is replaced
by a stub that hands out the next token of a fixed text at once, on both sides: raw
``mlx_lm.stream_generate`` (its ``generate_step`` stubbed; the detokenizer, the response objects
and the consuming loop remain) and the engine (its single-sequence decoder's ``advance``
stubbed; the worker's loop, detokenizer, parser, audit builder and delivery remain). What is
left is each side's bookkeeping per token, in CPU microseconds of the thread that would launch
the steps, plus the engine's consumer and notifier threads.

Run: ``python -m bench.bookkeeping [--tokens 20000] [--repeats 7] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mlxnb
from bench.bench_overhead import ENGINE_OPTIONS, PROMPT, worker_cpu
from bench.models import bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report
from mlxnb._engine.solo import SoloDecoder

TEXT = "The keeper climbed the stairs of the lighthouse every evening, and lit the lamp. "
"""What the stubbed model writes, over and over (plain words: the parser passes them through)."""


def text_tokens(tokenizer: Any) -> list[int]:
    """The stub's tokens: :data:`TEXT` encoded without special tokens."""
    return list(tokenizer.encode(TEXT, add_special_tokens=False))


@contextmanager
def stubbed_solo_decoder(tokens: list[int]) -> Iterator[None]:
    """Make every single-sequence decoder hand out ``tokens`` in a cycle, with no model call."""
    original = SoloDecoder.advance

    def advance(self: SoloDecoder) -> list[int]:
        if self._pending is None:
            self._unprefilled, self._pending = [], itertools.cycle(tokens)
        token = next(self._pending)
        self._keep([token])
        self.last_logprobs = [None]
        return [token]

    SoloDecoder.advance = advance  # type: ignore[method-assign]
    try:
        yield
    finally:
        SoloDecoder.advance = original  # type: ignore[method-assign]


@contextmanager
def stubbed_generate_step(tokens: list[int]) -> Iterator[None]:
    """Make ``mlx_lm.stream_generate`` read ``tokens`` in a cycle, with no model call."""
    # The module itself: the package's ``generate`` attribute is the function of that name.
    generate = importlib.import_module("mlx_lm.generate")
    original = generate.generate_step

    def generate_step(prompt: Any, model: Any, stream: Any, **kwargs: Any) -> Iterator[Any]:
        cycle = itertools.cycle(tokens)
        for _ in range(kwargs["max_tokens"]):
            yield next(cycle), None

    generate.generate_step = generate_step
    try:
        yield
    finally:
        generate.generate_step = original


def raw_cpu_per_token(model: Any, tokenizer: Any, tokens: int) -> float:
    """Raw's CPU microseconds per token (the consuming loop included, as a user runs it)."""
    import mlx_lm

    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)
    count, pieces = 0, 0
    start = time.thread_time()
    for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        count = response.generation_tokens
        pieces += bool(response.text)
    assert count == tokens and pieces > 0
    return (time.thread_time() - start) / count * 1e6


def engine_cpu_per_token(engine: mlxnb.Engine, tokens: int, consume: str) -> tuple[float, float]:
    """The worker's and the consumer's CPU microseconds per token, consumed on ``consume``."""

    async def on_loop() -> int:
        count = 0
        async for event in engine.stream(PROMPT, max_tokens=tokens):
            if isinstance(event, mlxnb.Done):
                count = event.usage.completion_tokens
        return count

    def on_thread() -> int:
        count = 0
        for event in engine.stream_sync(PROMPT, max_tokens=tokens):
            if isinstance(event, mlxnb.Done):
                count = event.usage.completion_tokens
        return count

    run: Callable[[], int] = (lambda: asyncio.run(on_loop())) if consume == "loop" else on_thread
    worker, consumer = worker_cpu(engine), time.thread_time()
    count = run()
    consumer, worker = time.thread_time() - consumer, worker_cpu(engine) - worker
    assert count == tokens
    return worker / count * 1e6, consumer / count * 1e6


def measure(tokens: int, repeats: int) -> dict[str, Any]:
    """Alternating repeats of raw, then the engine consumed without and with an event loop."""
    from mlx_lm import load

    path = bench_model("nano", "bfloat16")
    model, tokenizer = load(str(path))
    cycle = text_tokens(tokenizer)
    engine = mlxnb.load(path, **ENGINE_OPTIONS)
    raw: list[float] = []
    sides: dict[str, tuple[list[float], list[float]]] = {"sync": ([], []), "loop": ([], [])}
    try:
        with stubbed_generate_step(cycle), stubbed_solo_decoder(cycle):
            raw_cpu_per_token(model, tokenizer, 200)
            for consume in sides:
                engine_cpu_per_token(engine, 200, consume)
            for _ in range(repeats):
                raw.append(raw_cpu_per_token(model, tokenizer, tokens))
                for consume, (worker, consumer) in sides.items():
                    on_worker, on_consumer = engine_cpu_per_token(engine, tokens, consume)
                    worker.append(on_worker)
                    consumer.append(on_consumer)
    finally:
        engine.close()
    figures = {"raw_us": figure("raw: CPU per token (its loop included)", raw, unit="us")}
    for consume, (worker, consumer) in sides.items():
        how = "stream_sync" if consume == "sync" else "an event loop"
        extra = [ours - theirs for ours, theirs in zip(worker, raw, strict=True)]
        figures[f"{consume}_worker_us"] = figure(
            f"engine ({how}): worker CPU per token", worker, unit="us"
        )
        figures[f"{consume}_overhead_us"] = figure(
            f"engine ({how}): worker minus raw per token", extra, unit="us", target="<= 50"
        )
        figures[f"{consume}_consumer_us"] = figure(
            f"engine ({how}): consumer CPU per token", consumer, unit="us"
        )
    return {"tokens": tokens, "repeats": repeats, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    """Print (and with ``--json`` write) each side's bookkeeping per token."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("bookkeeping", args)
    with human_output(args.json):
        results = measure(args.tokens, args.repeats)
        print(f"bookkeeping per token, model stubbed out ({args.tokens} tokens, median of")
        print(f"{args.repeats} alternating repeats [min, max]):")
        for each in results["figures"].values():
            print(
                f"  {each['label']:52s} {each['median']:7.2f} us "
                f"[{each['min']:.2f}, {each['max']:.2f}]"
            )
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
