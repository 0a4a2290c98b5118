"""What the pool keeps per model, and which model makes room for another.

Pure bookkeeping (no MLX, no threads): :class:`PoolEntry` is one model's mutable record, and
:func:`plan_room` decides whether a model fits the budget or which idle model must go first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlxnb._engine.download import LoadProgress

if TYPE_CHECKING:
    from mlxnb._engine.engine import Engine

Watcher = Callable[[LoadProgress], None]

BUDGET_FRACTION = 0.6  # of physical memory: room for the KV caches, the kernel and the OS


def physical_memory() -> int:
    """Bytes of physical memory (unified memory on Apple silicon)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 16 << 30


@dataclass(eq=False)
class PoolEntry:
    """One model the pool knows: how to load it, and its engine while loaded (mutable state)."""

    name: str
    ref: str
    options: dict[str, Any]
    pinned: bool = False
    engine: Engine | None = None
    stage: str = "registered"
    progress: LoadProgress | None = None
    error: BaseException | None = None
    estimate: int = 0
    kind: str | None = None
    loads: int = 0
    served_before: int = 0  # by engines of this model already closed
    last_used: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    watchers: list[Watcher] = field(default_factory=list)

    @property
    def resident(self) -> bool:
        return self.engine is not None and not self.engine.closed

    @property
    def loading(self) -> bool:
        return self.stage in ("resolving", "downloading", "loading")

    def requests_served(self) -> int:
        """Requests this model finished, over all the engines it had."""
        return self.served_before + (self.engine.requests_served if self.engine else 0)

    def drop_engine(self) -> None:
        """Forget a closed (or closing) engine, keeping its count."""
        if self.engine is not None:
            self.served_before += self.engine.requests_served
        self.engine = None

    def evictable(self) -> bool:
        """Loaded (not loading), unpinned, and serving no request."""
        engine = self.engine
        ready = self.stage == "ready" and engine is not None and not engine.closed
        return ready and not self.pinned and engine is not None and engine.pending == 0


def state_name(entry: PoolEntry) -> str:
    """The entry's state for people: ``unloaded`` once a loaded engine is closed."""
    if entry.stage == "ready" and not entry.resident:
        return "unloaded"  # closed by its user, or evicted
    return entry.stage


@dataclass(frozen=True)
class RoomPlan:
    """What loading one more model needs first.

    Attributes:
        fits: It fits as things are.
        victim: The least recently used idle model to unload first (then plan again).
        refusal: Why it can never fit (a ``MemoryBudgetError`` message); ``None`` if it can.
    """

    fits: bool
    victim: PoolEntry | None = None
    refusal: str | None = None


def plan_room(
    entry: PoolEntry, others: Sequence[PoolEntry], budget_bytes: int, max_models: int | None
) -> RoomPlan:
    """Whether ``entry`` fits beside the resident or loading ``others``, and if not, what to do.

    When it does not fit and no model can be unloaded now, but some is only busy, the plan has
    neither victim nor refusal: wait for a request to finish and plan again.
    """
    used = sum(other.estimate for other in others)
    too_many = max_models is not None and len(others) >= max_models
    if not too_many and used + entry.estimate <= budget_bytes:
        return RoomPlan(fits=True)
    gib = 2**30
    if not others and entry.estimate > budget_bytes:
        return RoomPlan(
            fits=False,
            refusal=f"{entry.name} needs about {entry.estimate / gib:.2f} GiB; the pool's "
            f"budget is {budget_bytes / gib:.2f} GiB",
        )
    victims = sorted((other for other in others if other.evictable()), key=lambda e: e.last_used)
    if victims:
        return RoomPlan(fits=False, victim=victims[0])
    if all(other.pinned for other in others):
        pinned = ", ".join(other.name for other in others)
        return RoomPlan(
            fits=False,
            refusal=f"{entry.name} does not fit beside pinned models ({pinned}) within "
            f"{budget_bytes / gib:.2f} GiB; unload or unpin one",
        )
    return RoomPlan(fits=False)
