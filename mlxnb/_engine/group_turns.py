"""The worker's part in a sharded model's group: sharing each turn, and ending it when a rank goes.

:class:`GroupTurns` is mixed into :class:`~mlxnb._engine.worker.Worker`; its methods run only
when the worker holds a :class:`~mlxnb._engine.lockstep.Lockstep` (see that module for why every
rank must take the same turns).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from mlxnb._engine.commands import CLOSE, ModelQuestion, Question, answer
from mlxnb._engine.lockstep import CLOSE as CLOSE_WIRE
from mlxnb._engine.lockstep import Lockstep, Tick, WireRequest, group_failed
from mlxnb._engine.recording import failed_turn
from mlxnb._engine.request import Request
from mlxnb.errors import DistributedError, MlxnbError
from mlxnb.events import Done

if TYPE_CHECKING:
    from mlxnb._engine.active import Active, Backend
    from mlxnb._engine.admission import Admission
    from mlxnb._engine.delivery import Outbox
    from mlxnb._engine.worker_config import Finished, WorkerConfig

log = logging.getLogger("mlxnb.engine")

LOST_GRACE = 2.0
"""Seconds the worker has to end its requests itself once a rank is known lost."""


class GroupTurns:
    """Lockstep turns and group failure, over the worker's state."""

    if TYPE_CHECKING:  # the worker's, declared for the type checker
        backend: Backend | None
        group_error: DistributedError | None
        _lockstep: Lockstep | None
        _group_lost: DistributedError | None
        _group_lock: threading.Lock
        _config: WorkerConfig
        _active: dict[int, Active]
        _admission: Admission
        _outbox: Outbox
        _generator: Any
        _mx: Any
        _on_finished: Finished

        def _next_commands(self, block: bool) -> list[Any]: ...
        def _finish_failed(self, request: Request, error: BaseException) -> None: ...
        def _finished(self, active: Active, error: BaseException | None) -> None: ...
        def _fail_all(self, error: MlxnbError, cause: BaseException | None = None) -> None: ...
        def _drain_after_failure(self, error: BaseException) -> None: ...

    def _join_group(self, lockstep: Lockstep) -> None:
        """Take rank 0's settings and random seed, so every rank makes the same choices."""
        mx = _mlx()
        self._config = lockstep.share(self._config)
        seed = int(mx.random.randint(0, 2**31 - 1, ()).item()) if lockstep.leads else None
        mx.random.seed(lockstep.share(seed))

    def _watch_group(self, lockstep: Lockstep) -> None:
        """Start the heartbeats, once loaded (a tokenizer or weights load can hold the GIL long)."""
        lockstep.start_heartbeat(self._lost_rank if lockstep.leads else leader_lost)

    def _lost_rank(self, why: str) -> None:
        """A heartbeat watcher saw a follower gone (on its thread): end the requests.

        The worker ends them itself at its next turn; if it does not within
        :data:`LOST_GRACE` seconds, it is blocked in a collective that will not return, and the
        requests end from here.
        """
        error = group_failed(why)
        self._group_lost = error
        deadline = time.monotonic() + LOST_GRACE
        while time.monotonic() < deadline and self.group_error is None:
            time.sleep(0.05)
        with self._group_lock:
            if self.group_error is not None:
                return
            self.group_error = error
        log.error("mlxnb: %s (the engine's thread is blocked in MLX)", error)
        self._abandon(error)

    def _abandon(self, error: DistributedError) -> None:
        """End every request from another thread while the worker is blocked for good."""
        for active in list(self._active.values()):
            active.builder.add(Done("error", active.usage(peak_memory_gb=0.0), str(error)))
            self._finished(active, error)
            active.request.sink.put(error)
        for entry in list(self._admission.entries()):
            self._on_finished(entry.request, failed_turn(error), 0.0, error)
            entry.request.sink.put(error)
        for command in self._next_commands(block=False):
            if isinstance(command, Request):
                self._on_finished(command, failed_turn(error), 0.0, error)
                command.sink.put(error)
            elif isinstance(command, (Question, ModelQuestion)):
                command.answer.set_exception(error)

    def _share_turn(self, lockstep: Lockstep, commands: list[Any]) -> list[Any]:
        """This turn's commands, the same on every rank (rank 0's, as sent to the others)."""
        if not lockstep.leads:
            return [follower_command(c) for c in lockstep.tick(None).commands]
        shared: list[Any] = []
        kept: list[Any] = []
        for command in commands:
            if isinstance(command, Question):  # asks this process only
                kept.append(command)
                continue
            if isinstance(command, Request):
                try:
                    shared.append(WireRequest.of(command))
                except MlxnbError as error:
                    self._finish_failed(command, error)
                    continue
            elif isinstance(command, ModelQuestion):
                shared.append(command.job)
            else:
                shared.append(CLOSE_WIRE)
            kept.append(command)
        now = time.perf_counter()
        waiting = [entry.request for entry in self._admission.entries()]
        tick = Tick(
            tuple(shared),
            frozenset(
                r.request_id
                for r in [a.request for a in self._active.values()] + waiting
                if r.cancel.is_set()
            ),
            frozenset(
                entry.request.request_id
                for entry in self._admission.entries()
                if self._admission.expired(entry, now) is not None
            ),
        )
        lockstep.tick(tick)
        return kept

    def _answer_model(self, question: ModelQuestion) -> None:
        assert self.backend is not None
        model = self.backend.model
        with self._mx.stream(self._generator.stream):  # where the model's collectives go
            answer(Question(lambda: question.job(model), question.answer))

    def _end_group(self, error: DistributedError) -> None:
        """The group failed: end every request with ``error``; rank 0 refuses later ones."""
        with self._group_lock:
            if self.group_error is not None:  # a watcher ended them while this thread was stuck
                return
            self.group_error = error
        log.error("mlxnb: %s", error)
        assert self._lockstep is not None
        self._lockstep.stop_heartbeat()
        self._fail_all(error)
        for entry in self._admission.entries():
            self._admission.take(entry)
            self._finish_failed(entry.request, error)
        self._outbox.flush()
        if self._lockstep.leads:
            self._drain_after_failure(error)


def leader_lost(why: str) -> None:
    """A follower whose rank 0 is gone cannot go on, and may be blocked in a collective: exit."""
    log.error("mlxnb: %s; this rank exits", why)
    os._exit(1)


def follower_command(command: Any) -> Any:
    """A follower's copy of one command rank 0 shared."""
    if isinstance(command, WireRequest):
        return command.request()
    if command == CLOSE_WIRE:
        return CLOSE
    return ModelQuestion(command)


def _mlx() -> Any:
    import mlx.core as mx

    return mx
