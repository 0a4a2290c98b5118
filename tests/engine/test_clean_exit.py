"""Every way of using the engine lets the interpreter exit cleanly, every time.

An engine thread still moving while the interpreter finalizes used to abort the process
("terminate called without an active exception": status 134 in a shell, -6 here; see
:mod:`mlxnb._engine.threads`): measured before the fix, out of 8 runs each,
``agenerate_concurrent`` 5, ``never_closed`` 4, ``two_loops`` 3 and ``stream_broken_off`` 8.
Each pattern of ``exit_scripts/use_engine.py`` runs as its own Python process :data:`RUNS` times
(a pattern failing one run in three passes all six by luck 9% of the time), all patterns'
processes sharing a small pool, and must exit with status 0 every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from mlxnb.testing import tiny_model

SCRIPT = Path(__file__).parent / "exit_scripts" / "use_engine.py"
PATTERNS = [
    "generate",
    "stream_sync",
    "agenerate_concurrent",
    "stream_broken_off",
    "two_loops",
    "closed",
    "never_closed",
    "two_engines",
]
RUNS = 6
TIMEOUT = 120.0  # seconds for one run; a hang at exit fails too

Finished = subprocess.CompletedProcess[str]
Results = Callable[[str], list[Finished]]


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> Iterator[Results]:
    """The runs of a pattern; those of every pattern selected in this session start at once."""
    selected = [
        item.callspec.params["pattern"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    ]
    # The BPE tokenizer loads in milliseconds (the Qwen3 one takes a second): more runs per second.
    model = str(tiny_model(tokenizer="bpe"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MLXNB_AUDIT": ":memory:",
        "PYTHONFAULTHANDLER": "1",
    }

    def run(pattern: str) -> Finished:
        return subprocess.run(
            [sys.executable, str(SCRIPT), pattern, model],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)))
    started: dict[str, list[Future[Finished]]] = {}

    def start(pattern: str) -> list[Future[Finished]]:
        if pattern not in started:
            started[pattern] = [pool.submit(run, pattern) for _ in range(RUNS)]
        return started[pattern]

    for pattern in selected:
        start(pattern)
    yield lambda pattern: [future.result() for future in start(pattern)]
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_exits_cleanly_every_time(pattern: str, results: Results) -> None:
    finished = results(pattern)
    statuses = [done.returncode for done in finished]
    failures = "\n".join(
        f"--- run {i}: exit status {done.returncode}; stderr (end):\n{done.stderr[-3000:]}"
        for i, done in enumerate(finished)
        if done.returncode != 0
    )
    assert statuses == [0] * RUNS, f"{pattern}: exit statuses {statuses}\n{failures}"
