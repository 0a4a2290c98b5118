"""Use an engine one way, then let the interpreter exit (run by tests/engine/test_clean_exit.py).

Usage: ``python use_engine.py PATTERN [MODEL_DIR]`` (default model: ``mlxnb.testing.tiny_model()``).
The exit status is the test: anything but 0 (134 is "terminate called without an active
exception", an abort while the interpreter finalizes) is a failure.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable

import mlxnb

HI = [{"role": "user", "content": "hi"}]
SHORT = 8  # tokens: every request finishes
LONG = 2000  # tokens: still generating when the script ends


def load() -> mlxnb.Engine:
    """The engine on the tiny model, without an audit log."""
    if len(sys.argv) > 2:
        model = sys.argv[2]
    else:
        from mlxnb.testing import tiny_model

        model = str(tiny_model())
    return mlxnb.load(model, audit=False)


async def four_at_once(engine: mlxnb.Engine) -> None:
    """Four concurrent ``agenerate`` calls on the running loop."""
    prompts = [[{"role": "user", "content": f"hi {i}"}] for i in range(4)]
    turns = await asyncio.gather(*(engine.agenerate(p, max_tokens=SHORT) for p in prompts))
    assert len(turns) == 4


def generate() -> None:
    """Blocking ``generate``; the engine is left open."""
    engine = load()
    engine.generate(HI, max_tokens=SHORT)


def stream_sync() -> None:
    """Blocking ``stream_sync`` read to the end."""
    engine = load()
    events = list(engine.stream_sync(HI, max_tokens=SHORT))
    assert events


def agenerate_concurrent() -> None:
    """``asyncio.run`` over four concurrent ``agenerate`` calls (the reported script)."""
    engine = load()
    asyncio.run(four_at_once(engine))


def stream_broken_off() -> None:
    """``async for`` over ``stream`` left after the first event, a long reply still running."""
    engine = load()

    async def main() -> None:
        async for _ in engine.stream(HI, max_tokens=LONG):
            break

    asyncio.run(main())


def two_loops() -> None:
    """Two threads, each with its own event loop, using one engine at the same time."""
    engine = load()
    threads = [threading.Thread(target=asyncio.run, args=(four_at_once(engine),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def closed() -> None:
    """Blocking ``generate``, then async use, then ``close()``."""
    engine = load()
    engine.generate(HI, max_tokens=SHORT)
    asyncio.run(four_at_once(engine))
    engine.close()


def never_closed() -> None:
    """Sync and async use, the engine left open and referenced to the end."""
    engine = load()
    engine.generate(HI, max_tokens=SHORT)
    asyncio.run(four_at_once(engine))
    globals()["kept"] = engine


def two_engines() -> None:
    """Two engines used at once from one loop; one is closed, one is not."""
    first, second = load(), load()

    async def main() -> None:
        await asyncio.gather(four_at_once(first), four_at_once(second))

    asyncio.run(main())
    first.close()


PATTERNS: dict[str, Callable[[], None]] = {
    f.__name__: f
    for f in (
        generate,
        stream_sync,
        agenerate_concurrent,
        stream_broken_off,
        two_loops,
        closed,
        never_closed,
        two_engines,
    )
}

if __name__ == "__main__":
    PATTERNS[sys.argv[1]]()
