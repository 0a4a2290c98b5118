"""Is raw mlx-lm slower on a thread than on the main thread, and why?

The engine decodes on a worker thread; raw ``mlx_lm.stream_generate`` in the benches runs on
the main thread. On the H200 host raw on another thread (the same code) came out 0.81 to 1.05 of
raw on the main thread, and the engine's ratio moved with it. This diagnostic runs raw
``stream_generate`` alternately on the main thread and on a fresh thread (``--thread-kind
fresh``) or one long-lived thread (``persistent``), and reports per run the decode rate and, per
token, the launching thread's CPU time, minor page faults and context switches
(``RUSAGE_THREAD``, Linux). ``--malloc`` changes glibc's allocator before anything runs:
``arena1`` puts every thread on the main arena (``M_ARENA_MAX=1``), ``notrim`` stops returning
freed memory to the OS (``M_TRIM_THRESHOLD``/``M_MMAP_THRESHOLD`` raised), since a thread's own
arena gives memory back (and faults it in again) in ways the main arena does not.

Run: ``python -m bench.thread_placement [--shape tiny] [--pairs 24] [--malloc default]``.
"""

from __future__ import annotations

import argparse
import ctypes
import queue
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.models import SHAPES, bench_model
from bench.report import add_json_argument, figure, new_report, write_report

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def set_malloc(mode: str) -> None:
    """Change glibc's allocator for the rest of the process (before other threads exist)."""
    if mode == "default":
        return
    libc = ctypes.CDLL("libc.so.6")
    if mode == "arena1":
        libc.mallopt(M_ARENA_MAX, 1)
    elif mode == "notrim":
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 25)


@dataclass(frozen=True)
class Run:
    """One generation's figures."""

    decode_tokens_per_s: float
    cpu_us: float
    faults: float
    voluntary: float
    involuntary: float


def generate(model: Any, tokenizer: Any, prompt: str, tokens: int) -> Run:
    """Raw ``stream_generate`` on the calling thread, with that thread's usage per token."""
    import mlx_lm

    before = resource.getrusage(resource.RUSAGE_THREAD)
    cpu = time.thread_time()
    first = last = 0.0
    count = 0
    for _ in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        last = time.perf_counter()
        if count == 0:
            first = last
        count += 1
    after = resource.getrusage(resource.RUSAGE_THREAD)
    cpu_us = (time.thread_time() - cpu) * 1e6 / count
    return Run(
        decode_tokens_per_s=(count - 1) / (last - first),
        cpu_us=cpu_us,
        faults=(after.ru_minflt - before.ru_minflt) / count,
        voluntary=(after.ru_nvcsw - before.ru_nvcsw) / count,
        involuntary=(after.ru_nivcsw - before.ru_nivcsw) / count,
    )


class PersistentThread:
    """One long-lived thread that runs what it is given, as the engine's worker does."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Run], queue.Queue[Run]]] = queue.Queue()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            job, answer = self._jobs.get()
            answer.put(job())

    def run(self, job: Callable[[], Run]) -> Run:
        """Run ``job`` on the thread and return its result."""
        answer: queue.Queue[Run] = queue.Queue()
        self._jobs.put((job, answer))
        return answer.get()


def on_fresh_thread(job: Callable[[], Run]) -> Run:
    """Run ``job`` on a thread started for it."""
    result: list[Run] = []
    thread = threading.Thread(target=lambda: result.append(job()))
    thread.start()
    thread.join()
    return result[0]


def summary(runs: list[Run]) -> dict[str, float]:
    """Medians of each figure."""
    return {
        name: statistics.median(getattr(run, name) for run in runs)
        for name in ("decode_tokens_per_s", "cpu_us", "faults", "voluntary", "involuntary")
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--malloc", choices=["default", "arena1", "notrim"], default="default")
    parser.add_argument("--thread-kind", choices=["fresh", "persistent"], default="persistent")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    set_malloc(args.malloc)

    import mlx_lm

    model, tokenizer = mlx_lm.load(str(bench_model(args.shape, args.dtype, args.bits)))
    prompt = "Write a long story about a lighthouse keeper and the sea."
    job = lambda: generate(model, tokenizer, prompt, args.tokens)  # noqa: E731
    worker = PersistentThread()
    thread = worker.run if args.thread_kind == "persistent" else on_fresh_thread
    for _ in range(3):
        job()
        thread(job)
    main_runs: list[Run] = []
    thread_runs: list[Run] = []
    for round_ in range(args.pairs):
        # ABBA, so neither side always runs right after the other's warm buffers.
        if round_ % 2:
            thread_runs.append(thread(job))
            main_runs.append(job())
        else:
            main_runs.append(job())
            thread_runs.append(thread(job))
    ratios = [
        t.decode_tokens_per_s / m.decode_tokens_per_s
        for m, t in zip(main_runs, thread_runs, strict=True)
    ]
    report = new_report("thread_placement", args)
    main_figures, thread_figures = summary(main_runs), summary(thread_runs)
    for name in main_figures:
        print(f"{name:22s} main {main_figures[name]:10.2f}   thread {thread_figures[name]:10.2f}")
    print(
        f"thread ÷ main decode rate: median {statistics.median(ratios):.3f} "
        f"[{min(ratios):.2f}, {max(ratios):.2f}] over {len(ratios)} pairs"
    )
    results = {
        "figures": {
            "thread_over_main": figure(
                "raw on a thread ÷ raw on the main thread, decode rate", ratios, unit="x"
            )
        },
        "main": main_figures,
        "thread": thread_figures,
    }
    write_report(report, results, args.json)


if __name__ == "__main__":
    main()
