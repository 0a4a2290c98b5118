"""``mlxnb.serve`` with engine options from the command line, for bench_load's variants.

python -m bench.variant_server MODEL --port 8001 --prefill-batch 32 --solo off [--lone-first]
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

import mlxnb
from bench.trace import install
from mlxnb._engine.attention import CUDNN_ATTENTION
from mlxnb._engine.delivery import Notifier, Outbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefill-batch", type=int, default=None, help="default: the engine's")
    parser.add_argument("--solo", choices=("on", "off"), default="on")
    parser.add_argument(
        "--eager-wakeups", action="store_true", help="wake the server's loop for every step"
    )
    parser.add_argument(
        "--wake-interval",
        type=float,
        metavar="MS",
        help="wake the server's loop at most once per MS milliseconds (16 before 2026-12-04's"
        " change to 33)",
    )
    parser.add_argument(
        "--lone-first",
        action="store_true",
        help="a burst's first request starts alone even when the rest queued meanwhile (before"
        " 2026-12-02's change)",
    )
    parser.add_argument(
        "--first-token-in-batch",
        action="store_true",
        help="a prefilled lone request joining the batch waits for the newcomers' prefill"
        " before its first token (before 2026-12-02's change)",
    )
    parser.add_argument(
        "--render-on-worker",
        action="store_true",
        help="the worker renders every prompt, not the caller's thread (before 2026-12-02's"
        " change)",
    )
    parser.add_argument(
        "--render-on-loop",
        action="store_true",
        help="an async caller renders its prompt on its own event loop, one prompt at a time"
        " (before 2026-12-03's change)",
    )
    parser.add_argument(
        "--cudnn-attention",
        action="store_true",
        help="let MLX's CUDA backend plan prompts' attention with cuDNN (before 2026-12-03)",
    )
    parser.add_argument(
        "--deepcopy-prompt-cache",
        action="store_true",
        help="take a prompt-cache hit as a deep copy of the whole entry, as mlx-lm does (before"
        " 2026-12-03's change)",
    )
    parser.add_argument(
        "--no-first-token-hold",
        action="store_true",
        help="newcomers join the batch at once, even when its first tokens are due (before"
        " 2026-12-03's change)",
    )
    parser.add_argument(
        "--no-yield",
        action="store_true",
        help="the worker never yields the GIL to consumers starved of it (before 2026-12-03's"
        " change)",
    )
    parser.add_argument(
        "--token-deltas",
        action="store_true",
        help="hand the server each token's delta unjoined, a chunk per token (before"
        " 2026-12-04's change)",
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help="write audit rows, as `mlxnb serve` does (the variants skip them by default)",
    )
    parser.add_argument("--trace", type=Path, help="write the worker's timeline here (JSON lines)")
    args = parser.parse_args(argv)
    if args.trace is not None:
        install(args.trace)
    if args.cudnn_attention:
        os.environ[CUDNN_ATTENTION] = "1"
    solo = {"on": True, "off": False}[args.solo]
    engine = mlxnb.load(
        args.model, audit=args.audit, prefill_batch=args.prefill_batch, solo_fast_path=solo
    )
    if args.lone_first:
        engine._worker._company_arrived = lambda *_: False  # type: ignore[method-assign]
    if args.first_token_in_batch:
        from mlxnb._engine.solo import SoloDecoder

        SoloDecoder.awaits_first_token = property(lambda _: False)  # type: ignore[assignment,method-assign]
    if args.render_on_worker:
        import mlxnb._engine.engine as engine_module

        engine_module.render_request = lambda *_: None  # type: ignore[assignment]
    if args.render_on_loop:
        from bench.bench_submit import submit_on_loop
        from mlxnb._engine.engine import Engine

        Engine._submit_off_loop = submit_on_loop  # type: ignore[method-assign]
    if args.deepcopy_prompt_cache:
        from mlxnb._engine.prompt_cache import PromptCache

        def deep_copied(self: PromptCache, model: object, tokens: list[int]) -> object:
            cache, rest = self._lru.fetch_nearest_cache(model, tokens)
            return cache, list(rest)

        PromptCache.fetch_nearest_cache = deep_copied  # type: ignore[assignment,method-assign]
    if args.no_first_token_hold:
        engine._worker._first_tokens_due = lambda: False  # type: ignore[method-assign]
    if args.eager_wakeups:
        engine._worker._outbox = Outbox(Notifier(interval=0.0))
    if args.wake_interval is not None:
        engine._worker._outbox = Outbox(Notifier(interval=args.wake_interval / 1e3))
    if args.no_yield:
        from bench.bench_overhead import never_yielding

        engine._worker._outbox = never_yielding()
    if args.token_deltas:
        from mlxnb._server.response import Choices

        Choices._joined = lambda self, index, event: event  # type: ignore[method-assign]
    mlxnb.serve(engine, port=args.port)
    threading.Event().wait()  # until the bench terminates the process


if __name__ == "__main__":
    main()
