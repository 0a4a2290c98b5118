"""Long-lived threads for engine workers, and how they are brought to rest at interpreter exit.

A thread that has made MLX calls must not end before the process does: MLX keeps per-thread
state (its thread-local streams), and tearing that down when such a thread exits aborts the
process at interpreter exit in a good share of runs ("terminate called without an active
exception", measured 4 of 12 runs for load + generate + close on a plain thread, 0 of 10 when
the thread lives on). So engine workers run as jobs on threads that are parked, never ended,
when their engine closes, and the next engine reuses a parked thread.

Parking alone is not enough, and why shows what goes wrong in both cases. In MLX 0.32 the
compile cache is per OS thread, its entries hold Python objects, and its thread-local
destructor takes the GIL to drop them. CPython (3.11 here) ends a daemon thread that asks for
the GIL once ``Py_FinalizeEx`` has begun (``PyThread_exit_thread``); the destructor then runs,
asks for the GIL again inside that thread exit, and libstdc++ calls ``std::terminate``. Backtrace
of the aborting engine thread: ``take_gil`` -> ``PyThread_exit_thread`` -> ``__call_tls_dtors``
-> ``~shared_ptr<CompileCache>`` -> ``PyGILState_Ensure`` -> ``take_gil`` ->
``PyThread_exit_thread`` -> ``std::terminate``. A parked engine thread is safe only if it is
already blocked when finalization begins; one still moving (finishing the step that delivered
the last event, mid-step for a stream broken off early, returning from ``mx.eval``) aborts.
Measured on the CPU (2 busy cores): ``asyncio.run`` over four concurrent ``agenerate`` calls,
then exit, aborted 35 of 90 runs; a bare daemon thread that ran one ``mx.compile``-d function
and keeps running aborted 9 of 10, and 0 of 20 once it had called ``mx.clear_streams()``
(which clears the calling thread's compile cache).

Hence :func:`_bring_to_rest`, an ``atexit`` hook (atexit runs before finalization begins, with
the interpreter intact): it stops every running job (its ``stop`` callback: the engine closes),
waits until each thread is parked, then has each thread synchronize and release its own MLX
state (``mx.clear_streams()``) and stay parked, never to run MLX again. From then on an engine
thread holds nothing whose destruction needs the GIL, so CPython ending it during finalization
is harmless. With the hook the same script exited 0 in 60 of 60 runs, and every pattern of
``tests/engine/test_clean_exit.py`` in 64 of 64 (4 of 8 patterns aborted without it).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable

Job = Callable[[], None]

_log = logging.getLogger(__name__)

EXIT_TIMEOUT = 30.0
"""Seconds the exit hook waits, in all, for running jobs to stop and threads to release MLX."""


class _EngineThread:
    """One long-lived thread: its inbox of jobs and what it is doing."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.stop: Job | None = None  # ends the running job; None while parked
        self.parked = threading.Event()


_lock = threading.Lock()
_threads: list[_EngineThread] = []  # every engine thread of this process
_parked: list[_EngineThread] = []  # those free for the next job
_exiting = False


def run_on_engine_thread(job: Job, name: str = "mlxnb-engine", stop: Job | None = None) -> None:
    """Run ``job`` on a parked engine thread, or on a new one when none is free.

    Args:
        job: The worker loop; it returns when its engine closes.
        name: Name of a newly made thread.
        stop: Makes ``job`` return soon (any thread); called at interpreter exit while the job
            is still running, so that no MLX work is under way when the interpreter finalizes.
    """
    with _lock:
        thread = None if _exiting or not _parked else _parked.pop()
        new = thread is None
        if thread is None:
            thread = _EngineThread()
            _threads.append(thread)
        thread.stop = stop
        thread.parked.clear()
    if new:
        threading.Thread(target=_serve, args=(thread,), name=name, daemon=True).start()
    thread.inbox.put(job)


def _serve(thread: _EngineThread) -> None:
    while True:
        job = thread.inbox.get()
        try:
            job()
        except BaseException:  # the thread must outlive whatever a job raises (see above)
            _log.exception("an engine thread's job failed")
        finally:
            with _lock:
                thread.stop = None
                if not _exiting:
                    _parked.append(thread)
            thread.parked.set()


def _release_mlx_state(done: threading.Event) -> Job:
    def release() -> None:
        try:
            mx = sys.modules.get("mlx.core")  # a thread that never loaded MLX holds none of it
            if mx is not None and hasattr(mx, "clear_streams"):
                with contextlib.suppress(Exception):
                    mx.synchronize()  # nothing of ours may still be queued on this thread's stream
                mx.clear_streams()  # also clears this thread's compile cache (see above)
        finally:
            done.set()

    return release


@atexit.register
def _bring_to_rest() -> None:
    """Stop running jobs, then have every engine thread release its MLX state (see above)."""
    global _exiting
    with _lock:
        _exiting = True  # parked threads are no longer handed out
        _parked.clear()
        running = [(thread, thread.stop) for thread in _threads]
    for _, stop in running:
        if stop is not None:
            try:
                stop()
            except Exception:  # the other engines still get stopped
                _log.exception("stopping an engine at exit failed")
    deadline = time.monotonic() + EXIT_TIMEOUT
    for thread, _ in running:
        if not thread.parked.wait(max(0.0, deadline - time.monotonic())):
            continue  # still busy: it cannot be made safe, leave it be
        released = threading.Event()
        thread.inbox.put(_release_mlx_state(released))
        released.wait(max(0.0, deadline - time.monotonic()))


def _forget_threads_after_fork() -> None:
    # A forked child has none of the parent's threads: nothing to stop or wait for at its exit.
    global _lock
    _lock = threading.Lock()
    _threads.clear()
    _parked.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)
