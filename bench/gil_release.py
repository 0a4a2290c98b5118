"""Which MLX calls let another Python thread take the GIL, even when they have nothing to wait for.

A worker that launches steps holds the GIL except inside MLX calls that let go of it; those
are where the notifier and the consumers' threads get their turns, and the worker then waits
for them before it builds the next step. This probe runs a thread that only counts while it
holds the GIL, and calls each MLX function many times on the main thread: a call during which
the count moved let the GIL go. A pure-Python call is the control (the switch interval is
raised so no switch is forced).

Run: ``python -m bench.gil_release [--calls 200] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any

from bench.report import add_json_argument, figure, human_output, new_report, write_report


class Counter:
    """A thread that counts for as long as it holds the GIL."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            self.count += 1

    def __enter__(self) -> Counter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()


def handed_over(call: Callable[[], Any], counter: Counter, calls: int) -> int:
    """How many of ``calls`` calls of ``call`` let the counting thread run."""
    moved = 0
    for _ in range(calls):
        before = counter.count
        call()
        moved += counter.count != before
    return moved


def probe(calls: int) -> dict[str, int]:
    """Calls (of ``calls``) during which another thread got the GIL, by what was called."""
    import mlx.core as mx

    ready = mx.array([1.0]) + 1
    mx.eval(ready)
    small = mx.array([1.0])
    square = mx.ones((256, 256))
    mx.eval(square)

    def item_of_work_under_way() -> float:
        pending = (square @ square).sum()
        mx.async_eval(pending)
        return pending.item()

    cases: dict[str, Callable[[], Any]] = {
        "pure Python (control)": lambda: sum(range(10)),
        "item() of an evaluated array": ready.item,
        "async_eval of one small op": lambda: mx.async_eval(small + 1),
        "eval of one small op": lambda: mx.eval(small + 1),
        "async_eval, then item() (a step)": item_of_work_under_way,
    }
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.05)  # only calls that let go of the GIL hand it over
    try:
        with Counter() as counter:
            return {name: handed_over(call, counter, calls) for name, call in cases.items()}
    finally:
        sys.setswitchinterval(interval)


def main(argv: list[str] | None = None) -> None:
    """Print (and with ``--json`` write) how many calls of each kind let the GIL go."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls of each kind")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("gil_release", args)
    with human_output(args.json):
        counts = probe(args.calls)
        print(f"of {args.calls} calls of each, how many let a waiting thread take the GIL:")
        for name, moved in counts.items():
            print(f"  {name:32s} {moved:5d}")
    figures = {
        name: figure(f"{name}: calls that let another thread run", [moved], unit="calls")
        for name, moved in counts.items()
    }
    write_report(report, {"calls": args.calls, "figures": figures}, args.json)


if __name__ == "__main__":
    main()
