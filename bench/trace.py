"""A timeline of the worker's turns, for finding where a burst's time to first token goes.

``install(path)`` wraps, in this process, the points a request passes on its way to its first
token: its prompt rendered on the caller's thread (for a server, a helper thread), queued for
the worker, admitted (prompt rendered, cache looked up), each model pass
(mlx-lm's batch ``next``, the single-sequence ``advance``, a hand-over into the batch) and its
first token; and each step's delivery (the worker's flush, the notifier's wake-up, the loop's
hand-over, the consumer's take). Each becomes one JSON line ``{"t": seconds, "what": ..., ...}``
in ``path``, written when the process exits. Bench use only (``bench.variant_server --trace``,
``bench.bench_overhead --trace``): it patches the engine's classes.
"""

from __future__ import annotations

import atexit
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def install(path: Path) -> None:
    """Record the timeline of every engine in this process into ``path`` (JSON lines)."""
    from mlx_lm.generate import BatchGenerator

    import mlxnb._engine.engine as engine_module
    from mlxnb._engine.solo import SoloDecoder
    from mlxnb._engine.worker import Worker

    seen: set[int] = set()
    record = _buffered_into(path)

    def timed(cls: type, name: str, describe: Callable[..., dict[str, Any]]) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = original(*args, **kwargs)
            record(name, start=start, **describe(*args, result=result))
            return result

        setattr(cls, name, wrapper)

    def request_id(self: Any, request: Any, *_: Any, result: Any) -> dict[str, Any]:
        return {"id": request.request_id}

    render = engine_module.render_request

    @functools.wraps(render)
    def rendered(backend: Any, request: Any) -> Any:
        start = time.perf_counter()
        result = render(backend, request)
        record("render", start=start, id=request.request_id)
        return result

    engine_module.render_request = rendered
    timed(Worker, "submit", request_id)
    timed(Worker, "_admit", request_id)
    timed(Worker, "_hand_over_solo", lambda self, result: {})
    timed(SoloDecoder, "advance", lambda self, result: {"tokens": len(result)})
    timed(
        BatchGenerator,
        "next",
        lambda self, result: {"prefilled": len(result[0]), "tokens": len(result[1])},
    )
    on_token = Worker._on_token

    @functools.wraps(on_token)
    def first_token(self: Any, uid: int, *args: Any, **kwargs: Any) -> Any:
        active = self._active.get(uid)
        if active is not None and id(active) not in seen:
            seen.add(id(active))
            record("first", id=active.request.request_id)
        return on_token(self, uid, *args, **kwargs)

    Worker._on_token = first_token  # type: ignore[method-assign]
    trace_delivery(record)


def _buffered_into(path: Path) -> Callable[..., None]:
    """A recorder that keeps events in memory and writes them to ``path`` at exit.

    Writing each event as it happens would be a system call on the threads being traced, which
    lets go of the GIL and so changes what is measured (which thread gets it when). A SIGTERM
    (how the benches stop a server) ends the process through the exit handlers too.
    """
    events: list[dict[str, Any]] = []

    def record(what: str, **fields: Any) -> None:
        events.append({"t": time.perf_counter(), "what": what, **fields})  # atomic under the GIL

    def write() -> None:
        with path.open("a") as out:
            out.writelines(json.dumps(event) + "\n" for event in list(events))

    atexit.register(write)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return record


def trace_delivery(record: Callable[..., None]) -> None:
    """Record each step's way to its consumer: the worker's flush (and whether something was
    taken since the last one), the notifier's wake-ups, the loop's hand-over, the consumer's
    takes, and every wait for a starved consumer."""
    import mlxnb._engine.delivery as delivery

    flush = delivery.Outbox.flush

    @functools.wraps(flush)
    def traced_flush(self: Any) -> None:
        start, queued, taken = time.perf_counter(), bool(self._by_loop), self._taken.is_set()
        yields = self.yields
        flush(self)
        if queued or self.yields != yields:
            record("flush", start=start, taken=taken, waited=self.yields - yields)

    delivery.Outbox.flush = traced_flush  # type: ignore[method-assign]
    wake = delivery.Notifier._wake

    def traced_wake(merged: Any) -> None:
        start = time.perf_counter()
        wake(merged)
        record("wake", start=start, items=sum(len(items) for items in merged.values()))

    delivery.Notifier._wake = staticmethod(traced_wake)  # type: ignore[method-assign]
    hand_over = delivery._hand_over

    def traced_hand_over(items: Any) -> None:
        hand_over(items)
        record("hand_over", items=len(items))

    delivery._hand_over = traced_hand_over
    get = delivery.AsyncSink.get

    async def traced_get(self: Any) -> Any:
        item = await get(self)
        record("take", events=len(item) if isinstance(item, list) else 0)
        return item

    delivery.AsyncSink.get = traced_get  # type: ignore[method-assign]


def show(path: Path, gap: float = 1.0) -> None:
    """Print each burst's timeline (ms from its first request's queueing), one line per event.

    A burst is events with no pause longer than ``gap`` seconds between them.
    """
    events = sorted(
        (json.loads(line) for line in path.read_text().splitlines()),
        key=lambda e: e["start"] if "start" in e else e["t"],
    )
    origin = last = None
    for event in events:
        begin = event.get("start", event["t"])
        if last is None or begin - last > gap:
            origin = begin
            print("--- burst")
        last = event["t"]
        assert origin is not None
        took = (event["t"] - begin) * 1e3
        extra = {k: v for k, v in event.items() if k not in ("t", "start", "what", "id")}
        ident = event.get("id", "")[-6:]
        print(
            f"{(begin - origin) * 1e3:9.1f} ms  {event['what']:<16} {took:7.1f} ms  {ident} {extra}"
        )


if __name__ == "__main__":
    show(Path(sys.argv[1]))
