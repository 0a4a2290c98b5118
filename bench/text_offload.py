"""Would per-token Python work on a thread of its own shorten a launch-bound decode loop?

The thread that launches each step holds the GIL while it builds the step's graph and lets go
of it inside ``async_eval`` and ``item()``. The worker's per-token bookkeeping (detokenizing,
parsing, delivery) runs on that thread between steps; handed to a second thread one token
behind (as vLLM's asynchronous output processing does), it could run while the launching thread
is inside MLX without the GIL. This measures whether that pays: a single-sequence greedy loop as
mlx-lm's, the same per-token work (mlx-lm's streaming detokenizer, then ``--work`` iterations of
a Python loop standing in for parsing and delivery) done inline or on a second thread collected
one token later, in alternating pairs.

Run: ``python -m bench.text_offload [--shape nano] [--work 0 300] [--pairs 12] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from typing import Any

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, human_output, new_report, write_report

SIDES = ("inline", "thread")


def per_token_work(token: int, detokenizer: Any, loops: int) -> str:
    """What the worker does with a token: detokenize it, then ``loops`` of plain Python."""
    detokenizer.add_token(token)
    total = 0
    for index in range(loops):
        total += index
    return str(detokenizer.last_segment)


class Decoder:
    """A greedy single-sequence loop over one model, as ``mlx_lm.generate_step`` runs it."""

    def __init__(self, path: Any) -> None:
        import mlx.core as mx
        from mlx_lm import load

        self._mx = mx
        self._model, self._tokenizer = load(str(path))

    def _step(self, inputs: Any, cache: list[Any]) -> Any:
        mx = self._mx
        logits = self._model(inputs, cache=cache)[:, -1, :]
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return mx.argmax(logprobs, axis=-1)

    def run(self, side: str, tokens: int, loops: int) -> float:
        """Tokens per second for ``tokens`` tokens, the per-token work done on ``side``."""
        from mlx_lm.models.cache import make_prompt_cache

        mx = self._mx
        cache = make_prompt_cache(self._model)
        detokenizer = self._tokenizer.detokenizer
        detokenizer.reset()
        handed: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        done: queue.SimpleQueue[str] = queue.SimpleQueue()

        def work_off_thread() -> None:
            while (token := handed.get()) is not None:
                done.put(per_token_work(token, detokenizer, loops))

        helper = threading.Thread(target=work_off_thread, daemon=True)
        if side == "thread":
            helper.start()
        token = self._step(mx.array([[1, 2, 3, 4]], dtype=mx.uint32), cache)
        mx.async_eval(token)
        in_flight = False
        start = time.perf_counter()
        for _ in range(tokens):
            following = self._step(token[None], cache)
            mx.async_eval(following)
            value = int(token.item())
            if side == "inline":
                per_token_work(value, detokenizer, loops)
            else:
                if in_flight:
                    done.get()  # the token before: one behind, as a pipelined worker would be
                handed.put(value)
                in_flight = True
            token = following
        if in_flight:
            done.get()
        elapsed = time.perf_counter() - start
        if side == "thread":
            handed.put(None)
            helper.join()
        return tokens / elapsed


def measure(decoder: Decoder, tokens: int, pairs: int, loops: int) -> dict[str, Any]:
    """Alternating pairs (inline first in even pairs) of both sides at one ``loops``."""
    for side in SIDES:
        decoder.run(side, 32, loops)
    speeds: dict[str, list[float]] = {side: [] for side in SIDES}
    for pair in range(pairs):
        for side in SIDES if pair % 2 == 0 else SIDES[::-1]:
            speeds[side].append(decoder.run(side, tokens, loops))
    ratios = [t / i for i, t in zip(speeds["inline"], speeds["thread"], strict=True)]
    detokenizer = decoder._tokenizer.detokenizer
    detokenizer.reset()
    start = time.perf_counter()
    for token in range(100):
        per_token_work(token, detokenizer, loops)
    work_us = (time.perf_counter() - start) / 100 * 1e6
    return {
        "work_us": figure("per-token work, timed alone", [work_us], unit="us"),
        "inline_tps": figure("inline: tokens/s", speeds["inline"], unit="tok/s"),
        "thread_tps": figure(
            "on a thread, one token behind: tokens/s", speeds["thread"], unit="tok/s"
        ),
        "thread_vs_inline": figure("ratio thread ÷ inline tokens/s", ratios, unit="x"),
    }


def main(argv: list[str] | None = None) -> None:
    """Print (and with ``--json`` write) thread ÷ inline for each amount of work."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nano")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument(
        "--work", type=int, nargs="+", default=[0, 300, 1000], help="Python loop iterations"
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("text_offload", args)
    decoder = Decoder(bench_model(args.shape, args.dtype))
    results: dict[str, Any] = {}
    with human_output(args.json):
        for loops in args.work:
            figures = measure(decoder, args.tokens, args.pairs, loops)
            results[f"work_{loops}"] = {"loops": loops, "figures": figures}
            ratio = figures["thread_vs_inline"]
            print(
                f"work {figures['work_us']['value']:.0f} us a token: thread ÷ inline "
                f"{ratio['median']:.3f} [{ratio['min']:.3f}, {ratio['max']:.3f}] "
                f"({args.pairs} pairs; inline {figures['inline_tps']['median']:.0f} tok/s)"
            )
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
