"""Lockstep: one model sharded over the processes of an MLX distributed group.

A sharded model's forward pass holds collective operations (the ranks' partial results are
summed, or handed down a pipeline), so every rank must run the same forward passes in the same
order, with the same batch. Each rank therefore runs the same worker loop, fed the same inputs:
rank 0 (the leader) takes requests from its front doors, and at each turn of the loop it sends
the followers one :class:`Tick` holding everything that turn depends on that is not already the
same everywhere: the requests and model questions that arrived, which requests were cancelled,
which waits timed out, and whether the engine closes. The rest (prompt rendering, admission,
sampling, parsing) is deterministic given the same inputs, seed and settings, which the leader
also sends once at start. Followers deliver nothing and record nothing: their events go to a
:class:`DiscardSink`.

A lost rank makes the next collective raise (MLX's ring backend reports "connection to a peer
was lost"); the ranks can then no longer be assumed in step, so the worker ends every request
with :class:`~mlxnb.errors.DistributedError` and refuses new ones.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pickle
import threading
from dataclasses import dataclass
from typing import Any

from mlxnb._engine.delivery import Item, SyncSink
from mlxnb._engine.heartbeat import HeartbeatListener, HeartbeatSender, Lost, leader_address
from mlxnb._engine.request import Request
from mlxnb.errors import DistributedError, InvalidRequestError

log = logging.getLogger("mlxnb.engine")
LEADER = 0
CLOSE = "close"
"""The command that closes the engine on every rank, as it travels in a tick."""
# The caller's, and what rank 0 alone computed for it: they never leave rank 0.
_LOCAL_FIELDS = ("sink", "cancel", "rendered")


class DiscardSink(SyncSink):
    """Where a follower's events go: nowhere (rank 0 delivers them)."""

    tracked = False

    def put(self, item: Item) -> bool:
        """Drop ``item``."""
        return True


@dataclass(frozen=True)
class Tick:
    """What one turn of the worker loop depends on, as rank 0 saw it.

    Attributes:
        commands: The turn's commands in arrival order (requests, model questions, close).
        cancelled: Ids of running or waiting requests whose caller has cancelled.
        expired: Ids of waiting requests that have waited past the admission timeout.
    """

    commands: tuple[Any, ...] = ()
    cancelled: frozenset[str] = frozenset()
    expired: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WireRequest:
    """A request as it travels to the followers: everything but the caller's sink and event."""

    fields: dict[str, Any]

    @classmethod
    def of(cls, request: Request) -> WireRequest:
        """Strip ``request`` of what belongs to its caller.

        Raises:
            InvalidRequestError: It holds something that cannot be sent (such as a logits
                processor defined inside a function).
        """
        fields = {
            f.name: getattr(request, f.name)
            for f in dataclasses.fields(request)
            if f.name not in _LOCAL_FIELDS
        }
        wire = cls(fields)
        try:
            pickle.dumps(wire)
        except Exception as error:
            raise InvalidRequestError(
                "this request cannot be sent to the other ranks of a sharded model "
                f"({type(error).__name__}: {error}); logits processors must be importable "
                "top-level objects"
            ) from error
        return wire

    def request(self) -> Request:
        """The follower's copy: its events are discarded, its cancel flag set by ticks."""
        return Request(**self.fields, sink=DiscardSink(), cancel=threading.Event())


class Lockstep:
    """This process's end of a distributed group: the leader sends, followers receive.

    Args:
        group: The ``mx.distributed`` group (every rank holds a shard of the model).
    """

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank = int(group.rank())
        self.size = int(group.size())
        self.cancelled: frozenset[str] = frozenset()
        self.expired: frozenset[str] = frozenset()
        # The collectives inside the model run on the generator's stream; ours must run on it
        # too, so that every rank meets them in the same order (two streams interleave by timing).
        self.stream: Any = None
        self._heartbeat: HeartbeatListener | HeartbeatSender | None = None

    @property
    def leads(self) -> bool:
        """Whether this is rank 0, the one that serves the front doors."""
        return self.rank == LEADER

    def share(self, value: Any = None) -> Any:
        """Send the leader's ``value`` to every rank and return it (any rank; a collective).

        Raises:
            DistributedError: A rank is gone.
        """
        payload = pickle.dumps(value) if self.leads else b""
        received = self._broadcast(payload)
        return value if self.leads else _unpickle(received)

    def start_heartbeat(self, on_lost: Lost) -> None:
        """Watch the other ranks outside MLX (:mod:`mlxnb._engine.heartbeat`; a collective).

        Args:
            on_lost: Called once, on a watcher thread, when rank 0 sees a follower gone or a
                follower sees rank 0 gone.
        """
        host = leader_address()
        if self.leads:
            listener = HeartbeatListener(self.size - 1, on_lost, host)
            self._heartbeat = listener
            self.share(listener.port)
        else:
            port = self.share()
            self._heartbeat = HeartbeatSender(host, port, self.rank, on_lost)

    def stop_heartbeat(self) -> None:
        """Stop watching: the ranks part on purpose."""
        if self._heartbeat is not None:
            self._heartbeat.close()
            self._heartbeat = None

    def tick(self, tick: Tick | None) -> Tick:
        """Share one turn's inputs (the leader passes them; followers pass ``None``).

        The cancelled and expired ids of the shared tick become :attr:`cancelled` and
        :attr:`expired` on every rank, the only ones the worker consults this turn.
        """
        empty = tick is None or tick == Tick()
        payload = b"" if empty or not self.leads else pickle.dumps(tick)
        if CLOSE in (tick or Tick()).commands:
            self.stop_heartbeat()  # the followers hang up once they have it
        received = self._broadcast(payload)
        shared = self._tick_of(tick, received)
        if CLOSE in shared.commands:
            self.stop_heartbeat()
        self.cancelled, self.expired = shared.cancelled, shared.expired
        return shared

    def farewell(self) -> None:
        """Meet every rank once more after the closing tick, then part.

        Without it rank 0 could exit while a follower still receives that tick; a follower
        cannot tell that from a lost rank. Errors here are expected (the others may be gone).
        """
        try:
            self._broadcast(b"")
        except Exception:
            log.debug("mlxnb: a rank left before the farewell", exc_info=True)

    def _tick_of(self, sent: Tick | None, received: bytes) -> Tick:
        if self.leads:
            return sent or Tick()
        tick: Tick = _unpickle(received) if received else Tick()
        return tick

    def _broadcast(self, payload: bytes) -> bytes:
        import mlx.core as mx
        import numpy as np

        distributed = mx.distributed
        try:
            stream = self.stream
            size = distributed.all_sum(
                mx.array(len(payload), mx.int32), group=self.group, stream=stream
            )
            total = int(np.array(size))
            if total == 0:
                return b""
            if self.leads:
                data = mx.array(np.frombuffer(payload, np.uint8))
            else:
                data = mx.zeros(total, mx.uint8)
            summed = distributed.all_sum(data, group=self.group, stream=stream)
            return bytes(np.array(summed, copy=False))
        except (RuntimeError, ValueError) as error:  # a lost peer: errors, or garbage sizes
            raise group_failed(error) from error


def _unpickle(received: bytes) -> Any:
    """What rank 0 sent; a peer lost mid-transfer leaves zeros behind, which is a lost group."""
    try:
        return pickle.loads(received)
    except Exception as error:
        raise group_failed(error) from error


def group_failed(error: BaseException | str) -> DistributedError:
    """The error requests end with once the group has failed."""
    return DistributedError(
        f"the distributed group failed ({error}): the sharded model cannot go on; restart "
        "every rank"
    )


def join_group() -> Lockstep | None:
    """This process's place in the MLX distributed group it was started in (``mlx.launch``).

    Returns:
        ``None`` when the process is alone in its group (the model then loads whole).
    """
    import mlx.core as mx

    group = mx.distributed.init()
    if group.size() == 1:
        _warn_alone()
        return None
    return Lockstep(group)


@functools.cache
def _warn_alone() -> None:
    # Once per process: load() and the engine it makes both ask.
    log.warning("mlxnb: distributed=True, but this process is alone in its group")


def refuse_unsharded(**options: Any) -> None:
    """Refuse the engine options a sharded model does not support (before anything loads).

    Raises:
        InvalidRequestError: One of ``options`` is set.
    """
    for name, value in options.items():
        if value is not None:
            raise InvalidRequestError(f"{name} does not work with distributed=True")
