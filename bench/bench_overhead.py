"""Per-token overhead of the engine: CPU time of the thread that launches each step.

Wall-clock tokens/s move with the machine's mood (±8 % on the 2-core VM, ±25 % on the GPU
machine). The CPU time that the launching thread spends per token does not: it is the Python
work between steps, and on a fast device it is what separates us from raw mlx-lm. This bench
measures, on a model small enough that overhead dominates, from the call to the last token
(the prompt's prefill, the same on both sides, included):

- **raw**: ``mlx_lm.stream_generate`` on this thread: its CPU time and wall time per token;
- **engine**: ``engine.stream`` consumed on an event loop (as callers do): the worker thread's
  CPU time per token (asked of the worker itself, so it works on any OS), the consumer's CPU
  time per token, and the wall time per token.

It prints the overhead (engine worker CPU - raw CPU, µs per token; target ≤ 50), the time the
launching thread is off the CPU per token (waiting for the GIL or for the device), and engine ÷
raw tokens/s, each the median of alternating pairs after a warm-up, with their spread.

With ``--instructions`` it counts instead of timing: each side (raw, engine) generates
``--short-tokens`` and ``--tokens`` greedy tokens in processes of its own under valgrind's
callgrind, counted from the request to the end of the answer (every thread); the difference of
the two counts divided by the difference of the tokens is the instructions per token in steady
state (set-up, prefill and the turn's end cancel out). The counts repeat to within a fraction of
a percent, so the engine - raw difference is stable where CPU times are not. It is converted to
µs with the machine's instructions per µs for the same code, measured on each side's launching
thread: its instructions per token under callgrind ÷ its CPU µs per token in ``--calibration``
native runs (median).

``--raw-on-thread`` adds raw mlx-lm run on a thread of its own as a second side: the same code
as raw, so its ratio (an A/A comparison) shows how far this machine alone moves the median.
``--sync-consumer`` adds the engine consumed through ``engine.stream_sync`` (no event loop).
``--quiet-consumer`` adds an engine whose consumer is handed only the end (the worker's own cost,
without the consumer's and the notifier's turns); ``--wake-interval MS`` one whose notifier wakes
consumers at most once per MS milliseconds. ``--switch-interval US`` sets Python's switch
interval (how long a thread waiting for the GIL waits before it asks the holder to let go; 5 ms
by default) for the whole run, every side alike.
``--gaps`` also times, on each side's launching thread, the Python work per token between model
calls: from a token reaching the detokenizer to the next model call (wall time, median per run),
and splits each run's cycles (model call to model call) into its median and the spikes over it.
On a launch-bound GPU that work adds to every token, and no device wait is inside it, so it
compares the engine's per-token work with raw mlx-lm's where CPU time cannot (MLX's CUDA backend
waits for the device on the CPU).

Run: ``python -m bench.bench_overhead [--shape tiny] [--pairs 12] [--json PATH]``;
``python -m bench.bench_overhead --instructions [--runs 2] [--tokens 80] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import mlx_lm

import mlxnb
from bench.callgrind import Counter, child_environment, thread_counts
from bench.callgrind import command as callgrind_command
from bench.models import SHAPES, bench_model
from bench.report import (
    REPO,
    add_json_argument,
    figure,
    human_output,
    new_report,
    write_report,
)
from mlxnb._engine.delivery import WAKE_INTERVAL, Notifier, Outbox, _hand_over, ends_request
from mlxnb._server.completions import event_text

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
ENGINE_OPTIONS: dict[str, Any] = {"audit": False, "prompt_cache_size": 0, "kv_budget_bytes": None}
SOLO = {"on": True, "off": False, None: True}
RAW = "raw"


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The measured engine's options: no audit log, no prompt cache, ``--solo-fast-path``."""
    return {**ENGINE_OPTIONS, "solo_fast_path": SOLO[getattr(args, "solo_fast_path", None)]}


@dataclass(frozen=True)
class Run:
    """One generation, from the call to its last token: tokens, wall seconds, CPU seconds.

    From the call, not the first token: text held back (on the H200 a random 4-bit model's
    bytes, which the detokenizer holds until they make UTF-8, once all 255 tokens of it) or a
    delivery held up would otherwise shorten the engine's window.
    """

    tokens: int
    wall: float
    launcher_cpu: float  # the thread that launches each step (raw: this one; ours: the worker)
    consumer_cpu: float = 0.0  # the thread consuming the events (ours only)
    longest_wait: float = 0.0  # the longest the consumer waited between two tokens (ours only)
    deliveries: int = 0  # how many times the consumer was handed events (ours only)
    yields: int = 0  # the worker's waits for a starved consumer, and how many timed out
    yield_timeouts: int = 0
    # Pieces of text the generation came in (raw: non-empty segments; ours: text events) and
    # its first characters: a model whose text the detokenizer holds (bytes that are no UTF-8
    # yet) sends nothing for many tokens, which is not a delivery held up. (On the H200 a
    # random 4-bit model's greedy tokens differ from run to run, so raw's text is not ours.)
    text_pieces: int = 0
    text_head: str = ""
    gap: float = 0.0  # --gaps: median seconds from a token's detokenizing to the next model call
    notifier_cpu: float = 0.0  # the notifier thread, which wakes the consumer (ours only)
    # Tokens per second from the first token to the last, as each side's loop times them (raw:
    # when its loop gets a token; ours: the worker's own stamps, in the Done's usage): the rate
    # that per-token overhead slows, without the time to the first token.
    decode_tps: float = 0.0
    segments: dict[str, float] | None = None  # --gaps: each of SEGMENTS' mean seconds a token
    # Seconds from the call to the first token (raw: when its loop gets it; ours: the worker's
    # stamp, in the Done's usage): with ``outside_decode``, splits the time outside the decode
    # window into before the first token and after the last.
    first_token: float = 0.0

    @property
    def outside_decode(self) -> float:
        """Seconds of the run outside its decode window: before the first token, after the last."""
        return self.wall - (self.tokens - 1) / self.decode_tps if self.decode_tps else 0.0

    @property
    def after_last(self) -> float:
        """Seconds of the run after its last token (ours: until the Done reaches the consumer)."""
        return self.outside_decode - self.first_token

    def per_token_us(self, seconds: float) -> float:
        return 1e6 * seconds / max(self.tokens, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall


DELIVERY_GAP = 50e-6
"""Seconds between two events that make them two deliveries, not one handed over at once."""


class Arrivals:
    """The consumer's clock: the longest it waited between two events, and its deliveries."""

    def __init__(self) -> None:
        self.last = 0.0
        self.longest = 0.0
        self.deliveries = 0

    def arrived(self) -> None:
        now = time.perf_counter()
        if self.last:
            self.longest = max(self.longest, now - self.last)
        self.deliveries += not self.last or now - self.last > DELIVERY_GAP
        self.last = now


TEXT_HEAD = 40
"""Characters of each run's text kept in the report."""


class Text:
    """A run's text as it arrived: how many pieces, and its first characters."""

    def __init__(self) -> None:
        self.pieces = 0
        self.head = ""

    def add(self, text: str) -> None:
        if text:
            self.pieces += 1
            if len(self.head) < TEXT_HEAD:
                self.head = (self.head + text)[:TEXT_HEAD]


SEGMENTS = ("build", "wait", "between")
"""A token's time on the launching thread, in three parts (see :class:`Gaps`)."""
CYCLES = ("steady", "spikes", "head_spikes")
"""A token's time as a whole (model call to model call), split into the run's median
``steady`` cycle and the ``spikes`` over it (their mean a token), with those of the first
:data:`HEAD_CYCLES` cycles (``head_spikes``, their sum) apart: a loss in the steady cycle is paid
by every token, one in spikes by some (a wake-up, a hand-over of the GIL), one in the head by
the start of a run."""
HEAD_CYCLES = 16
SKIPPED_CYCLES = 2
"""Cycles left out at a run's start: they hold the prompt's prefill."""


class Gaps:
    """``--gaps``: each wait from a token reaching the detokenizer to the next model call.

    Both sides detokenize with copies of the same mlx-lm detokenizer, and both call the model
    through :class:`TimedModel`, so the two ends are the same points on either side. The same
    marks cut each token's time into three :data:`SEGMENTS`, whose means add up to the time a
    token takes: ``build`` (the model call: building the step's graph), ``wait`` (from its
    return to the next token reaching the detokenizer: the sampler, launching the step,
    waiting for the token ahead) and ``between`` (from there to the next model call: the
    side's bookkeeping, and any wait for the GIL).
    """

    def __init__(self) -> None:
        self._since: dict[int, float] = {}
        self._built: dict[int, float] = {}
        self.values: list[float] = []
        self.segments: dict[str, list[float]] = {name: [] for name in SEGMENTS}
        self._calls: dict[int, list[float]] = {}
        self._restore: Callable[[], None] = lambda: None

    def install(self, tokenizer: Any) -> None:
        """Mark every token added to ``tokenizer``'s detokenizers (a class-wide patch)."""
        cls = type(tokenizer._detokenizer)
        add_token = cls.add_token

        def marked(detokenizer: Any, token: int) -> None:
            thread, now = threading.get_ident(), time.perf_counter()
            self._since[thread] = now
            built = self._built.pop(thread, None)
            if built is not None:
                self.segments["wait"].append(now - built)
            add_token(detokenizer, token)

        cls.add_token = marked
        self._restore = lambda: setattr(cls, "add_token", add_token)

    def uninstall(self) -> None:
        """Undo :meth:`install`."""
        self._restore()

    def model_called(self) -> float:
        """Note a model call starting on this thread; returns the time it starts."""
        now = time.perf_counter()
        self._calls.setdefault(threading.get_ident(), []).append(now)
        since = self._since.pop(threading.get_ident(), None)
        if since is not None:
            self.values.append(now - since)
            self.segments["between"].append(now - since)
        return now

    def model_returned(self, started: float) -> None:
        """Note the model call begun at ``started`` returning on this thread."""
        now = time.perf_counter()
        self._built[threading.get_ident()] = now
        self.segments["build"].append(now - started)

    def take(self) -> tuple[float, dict[str, float]]:
        """The median wait and each segment's mean since the last call (0 when none), with the
        :data:`CYCLES` of the thread that called the model most, and start again."""
        values, self.values = self.values, []
        segments, self.segments = self.segments, {name: [] for name in SEGMENTS}
        calls = max(self._calls.values(), key=len, default=[])
        self._since.clear()
        self._built.clear()
        self._calls.clear()
        means = {name: statistics.fmean(got) if got else 0.0 for name, got in segments.items()}
        return (statistics.median(values) if values else 0.0), means | cycle_split(calls)


def cycle_split(calls: list[float]) -> dict[str, float]:
    """:data:`CYCLES` from the times a run's model calls started (zeros when too few)."""
    cycles = [b - a for a, b in itertools.pairwise(calls)][SKIPPED_CYCLES:]
    if len(cycles) < HEAD_CYCLES:
        return dict.fromkeys(CYCLES, 0.0)
    steady = statistics.median(cycles)
    spikes = [max(0.0, cycle - steady) for cycle in cycles]
    return {
        "steady": steady,
        "spikes": statistics.fmean(spikes),
        "head_spikes": sum(spikes[:HEAD_CYCLES]),
    }


class TimedModel:
    """The model, telling :class:`Gaps` of each call (every other attribute passes through)."""

    def __init__(self, model: Any, gaps: Gaps) -> None:
        self._model = model
        self._gaps = gaps

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = self._gaps.model_called()
        out = self._model(*args, **kwargs)
        self._gaps.model_returned(started)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def time_gaps(engines: list[mlxnb.Engine], model: Any, tokenizer: Any) -> tuple[Any, Gaps]:
    """Install ``--gaps``: raw's model to call, each engine's model swapped on its worker."""
    gaps = Gaps()
    gaps.install(tokenizer)
    for engine in engines:
        worker = engine._worker

        def swap(worker: Any = worker) -> None:
            worker.backend.model = TimedModel(worker.backend.model, gaps)

        worker.ask(swap, 10.0)
    return TimedModel(model, gaps), gaps


def raw_run(model: Any, tokenizer: Any, tokens: int) -> Run:
    count = 0
    text = Text()
    first = last = 0.0
    start_wall, start_cpu = time.perf_counter(), time.thread_time()
    # Timed as the engine's call is: from the messages, so both sides render the chat template.
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)
    for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
        last = time.perf_counter()
        first = first or last
        count = response.generation_tokens
        text.add(response.text)
    wall, cpu = time.perf_counter() - start_wall, time.thread_time() - start_cpu
    decode = (count - 1) / (last - first) if last > first else 0.0
    return Run(
        count,
        wall,
        cpu,
        text_pieces=text.pieces,
        text_head=text.head,
        decode_tps=decode,
        first_token=first - start_wall,
    )


def worker_cpu(engine: mlxnb.Engine) -> float:
    """The worker thread's own CPU time, read on the worker between steps."""
    return float(engine._worker.ask(time.thread_time, 10.0))


def notifier_cpu(engine: mlxnb.Engine) -> float:
    """CPU time so far of the thread that wakes ``engine``'s consumers (0 before it started).

    A direct-wake-up variant has no such thread: its worker wakes the loops itself.
    """
    thread = getattr(engine._worker._outbox._notifier, "thread", None)
    if thread is None or thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class ConsumerClocks:
    """From construction: wall time, this (consuming) thread's CPU and the notifier's CPU."""

    def __init__(self, engine: mlxnb.Engine) -> None:
        self._engine = engine
        self._notifier = notifier_cpu(engine)
        self._wall, self._consumer = time.perf_counter(), time.thread_time()

    def read(self) -> tuple[float, float, float]:
        """``(wall, consumer CPU, notifier CPU)`` seconds since construction."""
        wall, consumer = time.perf_counter() - self._wall, time.thread_time() - self._consumer
        return wall, consumer, notifier_cpu(self._engine) - self._notifier


async def engine_run(engine: mlxnb.Engine, tokens: int) -> Run:
    done = None
    arrivals = Arrivals()
    outbox = engine._worker._outbox
    yields, timeouts = outbox.yields, outbox.yield_timeouts
    start_worker = await asyncio.to_thread(worker_cpu, engine)  # idle: it answers at once
    text = Text()
    clocks = ConsumerClocks(engine)
    async for event in engine.stream(PROMPT, max_tokens=tokens):
        arrivals.arrived()
        text.add(event_text(event))
        if isinstance(event, mlxnb.Done):
            done = event
    wall, consumer, notifier = clocks.read()
    assert done is not None
    launcher = await asyncio.to_thread(worker_cpu, engine) - start_worker
    return Run(
        done.usage.completion_tokens,
        wall,
        launcher,
        consumer,
        arrivals.longest,
        arrivals.deliveries,
        outbox.yields - yields,
        outbox.yield_timeouts - timeouts,
        text.pieces,
        text.head,
        notifier_cpu=notifier,
        decode_tps=done.usage.generation_tps or 0.0,
        first_token=done.usage.time_to_first_token or 0.0,
    )


def engine_sync_run(engine: mlxnb.Engine, tokens: int) -> Run:
    """``engine.stream_sync`` consumed on this thread: the engine without an event loop."""
    done = None
    arrivals = Arrivals()
    start_worker = worker_cpu(engine)
    clocks = ConsumerClocks(engine)
    for event in engine.stream_sync(PROMPT, max_tokens=tokens):
        arrivals.arrived()
        if isinstance(event, mlxnb.Done):
            done = event
    wall, consumer, notifier = clocks.read()
    assert done is not None
    launcher = worker_cpu(engine) - start_worker
    return Run(
        done.usage.completion_tokens,
        wall,
        launcher,
        consumer,
        arrivals.longest,
        notifier_cpu=notifier,
        decode_tps=done.usage.generation_tps or 0.0,
        first_token=done.usage.time_to_first_token or 0.0,
    )


class DirectWakeups(Notifier):
    """The worker wakes each consumer's loop itself (how delivery worked before the notifier)."""

    def __init__(self) -> None:
        super().__init__(interval=0.0)  # nothing is held back

    def send(self, batches: Any, urgent: bool = False) -> None:
        for loop, items in batches.items():
            loop.call_soon_threadsafe(_hand_over, items)


class CoalescedDirectWakeups(Notifier):
    """The worker wakes each consumer's loop itself, at most once per interval (no notifier
    thread): batches within the interval are held for the worker's next one past it. A bench
    variant only: a stream that stalls would hold them until its next token."""

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[Any, list[Any]] = {}
        self._last_wake = -math.inf

    def send(self, batches: Any, urgent: bool = False) -> None:
        for loop, items in batches.items():
            self._held.setdefault(loop, []).extend(items)
        if urgent or time.monotonic() - self._last_wake >= self.interval:
            self.hurry()

    def hurry(self) -> None:
        held, self._held = self._held, {}
        self._last_wake = time.monotonic()
        self._wake(held)


VARIANTS = {
    "direct_wakeups": "the same, the worker waking consumer loops itself (no notifier thread):",
    "coalesced_direct": "the same, the worker waking loops itself at most once per interval:",
    "eager_wakeups": "the same, with the notifier waking the consumer's loop for every token:",
    "sync_consumer": "the same engine consumed by engine.stream_sync on the main thread:",
    "raw_on_thread": "raw mlx-lm run on a thread of its own (not the main thread) vs raw:",
    "no_yield": "the same, the worker never yielding the GIL to starved consumers (before):",
    "yield_at_most": "the same, the worker waiting up to --yield-at-most for starved consumers:",
    "quiet_consumer": "the same worker, its consumer handed only the end (no per-token turns):",
    "wake_interval": "the same, the notifier waking consumers at most once per --wake-interval:",
}


def never_yielding() -> Outbox:
    """An outbox whose worker never yields the GIL to starved consumers (before 2026-12-03)."""
    outbox = Outbox()
    outbox._yield_to_starved = lambda *_: None  # type: ignore[method-assign]
    return outbox


class QuietOutbox(Outbox):
    """Delivers only what ends a request: the worker does all its per-token work, but no
    consumer or notifier takes a turn for it (what the worker costs on its own)."""

    def put(self, sink: Any, cancel: threading.Event, item: Any) -> None:
        if ends_request(item):
            super().put(sink, cancel, item)


def variant_engines(args: argparse.Namespace, path: Path) -> dict[str, mlxnb.Engine]:
    """The A/B engines asked for, each delivering its events differently."""
    outboxes: dict[str, Callable[[], Outbox]] = {
        "direct_wakeups": lambda: Outbox(DirectWakeups()),
        "coalesced_direct": lambda: Outbox(CoalescedDirectWakeups()),
        "eager_wakeups": lambda: Outbox(Notifier(interval=0.0)),
        "no_yield": never_yielding,
        "yield_at_most": lambda: Outbox(yield_at_most=args.yield_at_most / 1e3),
        "quiet_consumer": QuietOutbox,
        "wake_interval": lambda: Outbox(Notifier(interval=args.wake_interval / 1e3)),
    }
    engines = {}
    for name, outbox in outboxes.items():
        if getattr(args, name, None) not in (None, False):
            engine = mlxnb.Engine(path, name=name, **engine_options(args))
            engine._worker._outbox = outbox()
            engines[name] = engine
    return engines


def pinned_cores() -> tuple[int, int]:
    """Two cores on different physical cores: one launches steps, one consumes the events.

    The GPU machine's threads ran at several distinct speeds (per-token CPU clustered near 450,
    550, 750 and 850 µs for the same work, raw and engine alike), by where the scheduler put
    them; pinning each side's launching thread to the same core compares like with like.
    """
    allowed = sorted(os.sched_getaffinity(0))
    launch = allowed[len(allowed) // 2]
    siblings = Path(f"/sys/devices/system/cpu/cpu{launch}/topology/thread_siblings_list")
    shared = {launch}
    if siblings.exists():
        for part in siblings.read_text().strip().split(","):
            first, _, last = part.partition("-")
            shared.update(range(int(first), int(last or first) + 1))
    others = [core for core in allowed if core not in shared]
    return launch, (others[-1] if others else launch)


def pin(core: int) -> None:
    """Keep the calling thread on ``core`` (Linux)."""
    os.sched_setaffinity(0, {core})


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run alternating rounds (raw, then each engine), print the tables, return the results."""
    path = bench_model(args.shape, args.dtype, args.bits)
    if args.trace is not None:
        from bench.trace import install

        install(args.trace)
    engine = mlxnb.load(path, **engine_options(args))
    variants = variant_engines(args, path)
    launch = consume = None
    if args.pin:
        launch, consume = pinned_cores()
        print(f"launching threads pinned to core {launch}, the consumer to core {consume}")
        for each in (engine, *variants.values()):
            each._worker.ask(lambda: pin(launch), 10.0)
    model, tokenizer = mlx_lm.load(str(path))
    gaps = None
    if args.gaps:
        model, gaps = time_gaps([engine, *variants.values()], model, tokenizer)
    raw_thread = ThreadPoolExecutor(max_workers=1)  # one thread for every run, as the worker
    if launch is not None:  # it launches steps too: on the same core as the others
        raw_thread.submit(pin, launch).result()
    sides: dict[str, Callable[[int], Run]] = {
        "engine": partial(run_on_loop, engine),
        **{name: partial(run_on_loop, each) for name, each in variants.items()},
    }
    if args.sync_consumer:
        sides["sync_consumer"] = partial(engine_sync_run, engine)
    if args.raw_on_thread:
        sides["raw_on_thread"] = lambda n: raw_thread.submit(raw_run, model, tokenizer, n).result()
    raw_run(model, tokenizer, 16)
    for warm in sides.values():
        warm(16)
    side_pairs: dict[str, list[tuple[Run, Run]]] = {name: [] for name in sides}
    for round_ in range(args.pairs):
        runs: dict[str, Run] = {}
        for name in round_order(round_, list(sides)):
            core = launch if name == RAW else consume
            if core is not None:
                pin(core)
            if gaps is not None:
                gaps.take()  # what the warm-up or the last side left
            if name == RAW:
                runs[name] = raw_run(model, tokenizer, args.tokens)
            else:
                runs[name] = sides[name](args.tokens)
            if gaps is not None:
                gap, segments = gaps.take()
                runs[name] = replace(runs[name], gap=gap, segments=segments)
        for name in sides:
            side_pairs[name].append((runs[RAW], runs[name]))
    engine.close()
    raw_thread.shutdown()
    for variant in variants.values():
        variant.close()
    if gaps is not None:
        gaps.uninstall()
    aa = side_pairs.get("raw_on_thread")
    same_rounds = None if aa is None else [ours for _, ours in aa]
    results = report(args, side_pairs.pop("engine"), same_rounds)
    for name, pairs in side_pairs.items():
        print(f"\n{VARIANTS[name]}")
        results[name] = report(args, pairs, None if name == "raw_on_thread" else same_rounds)
    return results


def round_order(round_: int, sides: list[str]) -> list[str]:
    """The order of one round's runs: raw and the other ``sides``.

    Raw runs first in even rounds and last in odd ones, and the other sides' order rotates
    every two rounds: whatever favours a run's place in a round (the device's clock still
    rising, caches warm from the run before) falls on each side equally.
    """
    shift = (round_ // 2) % len(sides)
    rotated = sides[shift:] + sides[:shift]
    return [RAW, *rotated] if round_ % 2 == 0 else [*rotated, RAW]


def run_on_loop(engine: mlxnb.Engine, tokens: int) -> Run:
    """One :func:`engine_run` on a new event loop."""
    return asyncio.run(engine_run(engine, tokens))


def gap_figures(pairs: list[tuple[Run, Run]]) -> dict[str, Any]:
    """``--gaps``: each side's Python per token between model calls, and their difference."""
    if not any(ours.gap for _, ours in pairs):
        return {}
    raw = [1e6 * raw.gap for raw, _ in pairs]
    ours = [1e6 * ours.gap for _, ours in pairs]
    return {
        "raw_gap_us": figure("raw: a token's detokenizing to the next model call", raw, unit="us"),
        "engine_gap_us": figure("engine: the same on the worker", ours, unit="us"),
        "gap_overhead_us": figure(
            "overhead between model calls, engine - raw",
            [o - r for o, r in zip(ours, raw, strict=True)],
            unit="us",
        ),
        **segment_figures(pairs),
    }


SEGMENT_LABELS = {
    "build": "the model call (building the graph)",
    "wait": "model call's end to the next token (launch, wait)",
    "between": "next token to the next model call (bookkeeping)",
    "steady": "median cycle, model call to model call",
    "spikes": "cycles' excess over that median, a token",
    "head_spikes": f"excess over it in the first {HEAD_CYCLES} cycles, a run",
}


def segment_figures(pairs: list[tuple[Run, Run]]) -> dict[str, Any]:
    """``--gaps``: where a token's time goes, as means per token, raw beside the engine."""
    if not all(raw.segments and ours.segments for raw, ours in pairs):
        return {}
    figures = {}
    for name in SEGMENTS + CYCLES:
        raw = [1e6 * raw.segments[name] for raw, _ in pairs]  # type: ignore[index]
        ours = [1e6 * ours.segments[name] for _, ours in pairs]  # type: ignore[index]
        label = SEGMENT_LABELS[name]
        mean = "" if name in CYCLES else "mean "
        figures[f"raw_{name}_us"] = figure(f"raw: {mean}{label}", raw, unit="us")
        figures[f"{name}_overhead_us"] = figure(
            "  engine - raw, per round", [o - r for o, r in zip(ours, raw, strict=True)], unit="us"
        )
    return figures


def report(
    args: argparse.Namespace, pairs: list[tuple[Run, Run]], same_rounds: list[Run] | None = None
) -> dict[str, Any]:
    """Print the table and build the ``--json`` results from the pairs.

    ``same_rounds``: raw on a thread of its own in the same rounds (``--raw-on-thread``), which
    each run is also compared with: the machine's state then weighs on both alike.
    """
    raw_cpu = [raw.per_token_us(raw.launcher_cpu) for raw, _ in pairs]
    our_cpu = [ours.per_token_us(ours.launcher_cpu) for _, ours in pairs]
    overhead = [o - r for o, r in zip(our_cpu, raw_cpu, strict=True)]
    raw_off = [raw.per_token_us(raw.wall - raw.launcher_cpu) for raw, _ in pairs]
    our_off = [ours.per_token_us(ours.wall - ours.launcher_cpu) for _, ours in pairs]
    consumer = [ours.per_token_us(ours.consumer_cpu) for _, ours in pairs]
    notifier = [ours.per_token_us(ours.notifier_cpu) for _, ours in pairs]
    ratios = [ours.tokens_per_s / raw.tokens_per_s for raw, ours in pairs]
    waits = [1e3 * ours.longest_wait for _, ours in pairs]
    deliveries = [float(ours.deliveries) for _, ours in pairs]
    yields = [float(ours.yields) for _, ours in pairs]
    timeouts = [float(ours.yield_timeouts) for _, ours in pairs]
    figures = {
        "raw_cpu_us": figure("raw: launching thread CPU per token", raw_cpu, unit="us"),
        "engine_cpu_us": figure("engine: worker thread CPU per token", our_cpu, unit="us"),
        "overhead_us": figure(
            "overhead, worker CPU - raw CPU per token", overhead, unit="us", target="<= 50"
        ),
        "raw_off_cpu_us": figure("raw: launching thread off CPU per token", raw_off, unit="us"),
        "engine_off_cpu_us": figure("engine: worker off CPU per token", our_off, unit="us"),
        "consumer_cpu_us": figure("engine: consumer loop CPU per token", consumer, unit="us"),
        "notifier_cpu_us": figure("engine: notifier thread CPU per token", notifier, unit="us"),
        "engine_vs_raw": figure("ratio engine ÷ raw tokens/s", ratios, unit="x", target=">= 0.97"),
        "engine_vs_raw_decode": figure(
            "ratio engine ÷ raw decode tokens/s (first token to last)",
            [ours.decode_tps / raw.decode_tps for raw, ours in pairs],
            unit="x",
            target=">= 0.97",
        ),
        "outside_decode_ms": figure(
            "time outside the decode (to the first token, after the last), engine - raw",
            [1e3 * (ours.outside_decode - raw.outside_decode) for raw, ours in pairs],
            unit="ms",
        ),
        "first_token_ms": figure(
            "  of which to the first token, engine - raw",
            [1e3 * (ours.first_token - raw.first_token) for raw, ours in pairs],
            unit="ms",
        ),
        "after_last_ms": figure(
            "  of which after the last token, engine - raw",
            [1e3 * (ours.after_last - raw.after_last) for raw, ours in pairs],
            unit="ms",
        ),
        "longest_wait_ms": figure(
            "engine: consumer's longest wait between tokens", waits, unit="ms"
        ),
        "deliveries": figure("engine: deliveries to the consumer per run", deliveries, unit=""),
        "single_delivery_runs": figure(
            "engine: runs delivered all at once",
            [float(sum(count == 1 for count in deliveries))],
            unit="",
        ),
        "held_text_runs": figure(
            "  of which the text itself was one piece (held, not late)",
            [float(sum(ours.deliveries == 1 and ours.text_pieces <= 1 for _, ours in pairs))],
            unit="",
        ),
        "text_pieces": figure(
            "engine: pieces of text per run (raw's in the runs)",
            [float(ours.text_pieces) for _, ours in pairs],
            unit="",
        ),
        **gap_figures(pairs),
        "yields": figure("engine: worker's yields to a starved consumer per run", yields, unit=""),
        "yield_timeouts": figure("engine: yields that timed out per run", timeouts, unit=""),
    }
    if same_rounds is not None:
        versus = [
            ours.tokens_per_s / aa.tokens_per_s
            for (_, ours), aa in zip(pairs, same_rounds, strict=True)
        ]
        figures["engine_vs_aa"] = figure(
            "ratio engine ÷ raw on a thread (A/A), same round", versus, unit="x"
        )
        figures["engine_vs_aa_decode"] = figure(
            "ratio engine ÷ A/A decode tokens/s, same round",
            [
                ours.decode_tps / aa.decode_tps
                for (_, ours), aa in zip(pairs, same_rounds, strict=True)
            ],
            unit="x",
        )
    import mlx.core as mx

    print(
        f"\nper-token overhead — shape {args.shape} {args.dtype} on {mx.default_device()}, "
        f"{args.tokens} tokens, {args.pairs} alternating pairs (median [min, max]), "
        f"{mlxnb.__version__}"
    )
    width = max(len(f["label"]) for f in figures.values())
    for item in figures.values():
        spread = f"[{min(item['values']):.2f}, {max(item['values']):.2f}]"
        print(f"  {item['label']:<{width}}  {item['value']:9.2f} {item['unit']:<5} {spread}")
    runs = [
        {
            "raw_tokens": raw.tokens,
            "raw_wall_s": raw.wall,
            "raw_cpu_s": raw.launcher_cpu,
            "engine_tokens": ours.tokens,
            "engine_wall_s": ours.wall,
            "engine_worker_cpu_s": ours.launcher_cpu,
            "engine_consumer_cpu_s": ours.consumer_cpu,
            "engine_notifier_cpu_s": ours.notifier_cpu,
            "engine_longest_wait_s": ours.longest_wait,
            "engine_deliveries": ours.deliveries,
            "engine_yields": ours.yields,
            "engine_yield_timeouts": ours.yield_timeouts,
            "raw_text_pieces": raw.text_pieces,
            "engine_text_pieces": ours.text_pieces,
            "raw_text_head": raw.text_head,
            "engine_text_head": ours.text_head,
            "raw_gap_s": raw.gap,
            "engine_gap_s": ours.gap,
            "raw_segments_s": raw.segments,
            "engine_segments_s": ours.segments,
            "raw_decode_tps": raw.decode_tps,
            "engine_decode_tps": ours.decode_tps,
        }
        for raw, ours in pairs
    ]
    return {"runs": runs, "figures": figures}


# --- instruction counts (--instructions) ---------------------------------------------------

CHILD = (
    "import bench.callgrind as c; c.tolerate_rlimit(); import bench.bench_overhead as b; b.main()"
)
"""The counted helper's ``python -c`` (mlx-lm must not fail to set its file limit on import)."""

SIDES = (RAW, "engine")


def counted_generation(args: argparse.Namespace) -> None:
    """The helper process (under callgrind): one greedy generation, counted, on one side.

    Counting starts before the request and stops once every thread is idle again (the step
    computed ahead is finished, the engine's worker has answered a question after the turn), so
    nothing is cut at either end. Prints
    one JSON line: tokens generated and the text's hash (both sides must agree).
    """
    import mlx.core as mx
    from mlx_lm.generate import generation_stream

    counter = Counter()
    path = bench_model(args.shape, args.dtype, args.bits)
    engine: mlxnb.Engine | None = None
    if args.instructions_child == "raw":
        model, tokenizer = mlx_lm.load(str(path))
        prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)

        def generate(tokens: int) -> tuple[int, str]:
            pieces, count = [], 0
            for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens):
                pieces.append(response.text)
                count = response.generation_tokens
            return count, "".join(pieces)

    else:
        engine = mlxnb.load(path, **engine_options(args))

        def generate(tokens: int) -> tuple[int, str]:
            assert engine is not None
            return asyncio.run(consume(engine, tokens))

    def settle(role: str) -> int:
        # Each side computes one step ahead of the last token it reads: wait for that step's
        # computation (on this thread's generation stream) inside the count, not after it.
        mx.synchronize(generation_stream)
        return counter.mark(role)

    generate(8)  # warm-up, not counted
    gc.collect()
    counter.start()
    tokens, text = generate(args.tokens)
    settle("main")
    if engine is not None:
        engine._worker.ask(lambda: settle("worker"), 600.0)
        time.sleep(0.2)  # the worker goes back to waiting for work
    counter.stop()
    if engine is not None:
        engine.close()
    digest = hashlib.sha256(text.strip().encode()).hexdigest()[:16]
    print(json.dumps({"tokens": tokens, "text_sha256": digest}), flush=True)


async def consume(engine: mlxnb.Engine, tokens: int) -> tuple[int, str]:
    """Iterate an ``engine.stream`` as a user does: its completion tokens and its text."""
    pieces: list[str] = []
    count = 0
    async for event in engine.stream(PROMPT, max_tokens=tokens):
        if isinstance(event, mlxnb.ThinkingDelta | mlxnb.ContentDelta):
            pieces.append(event.text)
        elif isinstance(event, mlxnb.Done):
            count = event.usage.completion_tokens
    return count, "".join(pieces)


def count_one(args: argparse.Namespace, side: str, tokens: int, out_file: Path) -> dict[str, Any]:
    """Run one counted generation under callgrind; its tokens, text hash and per-thread counts."""
    argv = ["-c", CHILD, "--instructions-child", side, "--tokens", str(tokens)]
    argv += ["--shape", args.shape, "--dtype", args.dtype]
    if args.solo_fast_path is not None:
        argv += ["--solo-fast-path", args.solo_fast_path]
    if args.bits is not None:
        argv += ["--bits", str(args.bits)]
    done = subprocess.run(
        callgrind_command(out_file, argv),
        cwd=REPO,
        env=child_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the counted {side} run failed:\n{done.stderr[-4000:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    threads = thread_counts(out_file)
    return {
        "side": side,
        "asked": tokens,
        **info,
        "threads": threads,
        "total": sum(threads.values()),
    }


def per_token(short: dict[str, Any], long: dict[str, Any], thread: str | None = None) -> float:
    """Instructions per token in steady state: the long run's count minus the short one's."""
    tokens = int(long["tokens"] - short["tokens"])
    if thread is None:
        return float(long["total"] - short["total"]) / tokens
    return float(long["threads"].get(thread, 0) - short["threads"].get(thread, 0)) / tokens


def other_threads(run: dict[str, Any]) -> int:
    """Instructions of the threads that are neither ``main`` nor the engine's ``worker``."""
    return sum(n for name, n in run["threads"].items() if name not in ("main", "worker"))


def calibrate(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Native CPU µs per token of each side's launching thread, in alternating pairs."""
    path = bench_model(args.shape, args.dtype, args.bits)
    engine = mlxnb.load(path, **engine_options(args))
    model, tokenizer = mlx_lm.load(str(path))
    raw_run(model, tokenizer, 16)
    asyncio.run(engine_run(engine, 16))
    raw_us, engine_us = [], []
    for _ in range(args.calibration):
        raw = raw_run(model, tokenizer, args.tokens)
        ours = asyncio.run(engine_run(engine, args.tokens))
        raw_us.append(raw.per_token_us(raw.launcher_cpu))
        engine_us.append(ours.per_token_us(ours.launcher_cpu))
    engine.close()
    return raw_us, engine_us


def count_instructions(args: argparse.Namespace) -> dict[str, Any]:
    """Count both sides ``--runs`` times, convert the difference to µs, print the table."""
    sizes = (args.short_tokens, args.tokens)
    jobs = [(run, side, n) for run in range(args.runs) for side in SIDES for n in sizes]
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as temporary,
        ThreadPoolExecutor(max_workers=args.jobs) as pool,
    ):
        folder = args.keep_profiles or temporary
        Path(folder).mkdir(parents=True, exist_ok=True)
        futures = {
            (run, side, n): pool.submit(
                count_one, args, side, n, Path(folder) / f"{side}-{n}-{run}"
            )
            for run, side, n in jobs
        }
        counted = {job: future.result() for job, future in futures.items()}
    texts: dict[tuple[str, int], set[str]] = {(side, n): set() for side in SIDES for n in sizes}
    for (_, side, n), result in counted.items():
        texts[side, n].add(result["text_sha256"])
    same_text = all(texts["raw", n] == texts["engine", n] for n in sizes)
    columns: dict[str, list[float]] = {}
    for run in range(args.runs):
        raw = counted[run, "raw", args.short_tokens], counted[run, "raw", args.tokens]
        ours = counted[run, "engine", args.short_tokens], counted[run, "engine", args.tokens]
        row = {
            "raw": per_token(*raw),
            "engine": per_token(*ours),
            "raw_main": per_token(*raw, "main"),
            "engine_worker": per_token(*ours, "worker"),
            "engine_main": per_token(*ours, "main"),
            "raw_other": (other_threads(raw[1]) - other_threads(raw[0]))
            / (raw[1]["tokens"] - raw[0]["tokens"]),
            "engine_other": (other_threads(ours[1]) - other_threads(ours[0]))
            / (ours[1]["tokens"] - ours[0]["tokens"]),
        }
        row["difference"] = row["engine"] - row["raw"]
        row["worker_difference"] = row["engine_worker"] - row["raw_main"]
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    raw_us, engine_us = calibrate(args)
    raw_rate = statistics.median(columns["raw_main"]) / statistics.median(raw_us)
    engine_rate = statistics.median(columns["engine_worker"]) / statistics.median(engine_us)
    difference_us = [d / raw_rate for d in columns["difference"]]
    worker_us = [d / raw_rate for d in columns["worker_difference"]]
    labels = {
        "raw": "raw: instructions per token, all threads",
        "engine": "engine: instructions per token, all threads",
        "difference": "engine - raw, all threads",
        "raw_main": "raw: launching (main) thread",
        "engine_worker": "engine: worker thread",
        "worker_difference": "engine worker - raw launching thread",
        "engine_main": "engine: consumer (main) thread",
        "raw_other": "raw: other threads (MLX's CPU stream)",
        "engine_other": "engine: other threads (MLX's CPU stream, notifier)",
    }
    figures = {
        f"{key}_instructions": figure(label, columns[key], unit="instr")
        for key, label in labels.items()
    }
    figures["overhead_us"] = figure(
        "overhead, all threads (engine - raw) in µs", difference_us, unit="us", target="<= 50"
    )
    figures["worker_overhead_us"] = figure(
        "overhead, worker - raw launching thread in µs", worker_us, unit="us"
    )
    figures["raw_cpu_us"] = figure("native: raw launching thread CPU per token", raw_us, unit="us")
    figures["engine_cpu_us"] = figure("native: engine worker CPU per token", engine_us, unit="us")
    figures["instructions_per_us"] = figure(
        "instructions per µs (raw launching thread)", [raw_rate], unit="instr/us"
    )
    figures["engine_instructions_per_us"] = figure(
        "instructions per µs (engine worker, a check)", [engine_rate], unit="instr/us"
    )
    import mlx.core as mx

    tokens = args.tokens - args.short_tokens
    print(
        f"\nper-token instructions — shape {args.shape} {args.dtype} on {mx.default_device()}, "
        f"callgrind, ({args.tokens} - {args.short_tokens} tokens) / {tokens}, {args.runs} runs "
        f"(median [min, max]); µs at {raw_rate:.0f} instructions/µs; greedy texts "
        f"{'identical' if same_text else 'DIFFER'}; {mlxnb.__version__}"
    )
    width = max(len(f["label"]) for f in figures.values())
    for item in figures.values():
        spread = f"[{min(item['values']):.1f}, {max(item['values']):.1f}]"
        print(f"  {item['label']:<{width}}  {item['value']:12.1f} {item['unit']:<10} {spread}")
    runs = [{"run": run, "side": side, **counted[run, side, n]} for run, side, n in jobs]
    return {"runs": runs, "same_text": same_text, "figures": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument(
        "--tokens", type=int, default=None, help="tokens per run (256; --instructions: 80)"
    )
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--bits", type=int, default=None, help="quantise the model (e.g. 4)")
    parser.add_argument(
        "--solo-fast-path",
        choices=["on", "off"],
        default=None,
        help="the engine's single-sequence path for a lone request (default: on)",
    )
    parser.add_argument(
        "--direct-wakeups",
        action="store_true",
        help="also measure an engine whose worker wakes consumer loops itself (A/B)",
    )
    parser.add_argument(
        "--coalesced-direct",
        action="store_true",
        help="also measure an engine whose worker wakes consumer loops itself, at most once per"
        " notifier interval, with no notifier thread (A/B)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the thread launching steps (raw's, the worker) to one core, the consumer to "
        "another (Linux; steadier pairs on machines whose cores run at different speeds)",
    )
    parser.add_argument(
        "--eager-wakeups",
        action="store_true",
        help="also measure an engine whose notifier wakes the consumer for every token (A/B)",
    )
    parser.add_argument(
        "--no-yield",
        action="store_true",
        help="also measure an engine whose worker never yields the GIL to starved consumers (A/B)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="write the engines' timeline, each step's delivery included, here (JSON lines;"
        " python -m bench.trace PATH shows it)",
    )
    parser.add_argument(
        "--yield-at-most",
        type=float,
        default=None,
        metavar="MS",
        help="also measure an engine whose worker waits up to MS milliseconds for a starved"
        " consumer (A/B)",
    )
    parser.add_argument(
        "--quiet-consumer",
        action="store_true",
        help="also measure an engine whose consumer is handed only the end (the worker alone)",
    )
    parser.add_argument(
        "--wake-interval",
        type=float,
        default=None,
        metavar="MS",
        help="also measure an engine whose notifier wakes consumers at most once per MS"
        f" milliseconds (the default is {1e3 * WAKE_INTERVAL:g})",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        metavar="US",
        help="Python's switch interval in microseconds for the whole run (default: 5000)",
    )
    parser.add_argument(
        "--gaps",
        action="store_true",
        help="also time each side's Python per token between model calls (from a token's "
        "detokenizing to the next model call)",
    )
    parser.add_argument(
        "--sync-consumer",
        action="store_true",
        help="also measure the engine consumed by stream_sync on the main thread (no loop)",
    )
    parser.add_argument(
        "--raw-on-thread",
        action="store_true",
        help="also measure raw mlx-lm on a thread of its own, as the engine's worker runs",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per token under valgrind's callgrind instead of timing",
    )
    parser.add_argument(
        "--short-tokens",
        type=int,
        default=16,
        help="--instructions: the shorter run's tokens, whose count is subtracted",
    )
    parser.add_argument("--runs", type=int, default=2, help="--instructions: counted runs")
    parser.add_argument(
        "--jobs", type=int, default=2, help="--instructions: counted processes at once"
    )
    parser.add_argument(
        "--calibration",
        type=int,
        default=5,
        help="--instructions: native pairs that measure instructions per µs",
    )
    parser.add_argument(
        "--keep-profiles",
        metavar="DIR",
        help="--instructions: keep callgrind's files here (for callgrind_annotate)",
    )
    parser.add_argument("--instructions-child", choices=SIDES, help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.tokens is None:
        args.tokens = 80 if args.instructions or args.instructions_child else 256
    if args.instructions_child:
        counted_generation(args)
        return
    if args.instructions and args.tokens <= args.short_tokens:
        parser.error("--tokens must be more than --short-tokens")
    results = new_report("overhead", args)
    interval = sys.getswitchinterval()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval / 1e6)
    try:
        with human_output(args.json):
            measured = count_instructions(args) if args.instructions else measure(args)
        measured["switch_interval_s"] = sys.getswitchinterval()
    finally:
        sys.setswitchinterval(interval)
    write_report(results, measured, args.json)


if __name__ == "__main__":
    main()
