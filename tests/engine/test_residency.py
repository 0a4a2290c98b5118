"""plan_room: which model fits, which goes first, and what can never fit (pure bookkeeping)."""

from __future__ import annotations

from typing import Any

import pytest

from mlxnb._engine.residency import PoolEntry, plan_room


class Busy:
    """Stands in for a loaded engine: only ``closed`` and ``pending`` are read."""

    def __init__(self, pending: int = 0) -> None:
        self.closed = False
        self.pending = pending


def loaded(
    name: str, estimate: int, last_used: float, *, pending: int = 0, pin: bool = False
) -> PoolEntry:
    entry = PoolEntry(name, name, {}, pinned=pin, estimate=estimate, last_used=last_used)
    entry.engine = Busy(pending)  # type: ignore[assignment]
    entry.stage = "ready"
    return entry


NEW = PoolEntry("new", "new", {}, estimate=40)


@pytest.mark.parametrize(
    ("others", "budget", "max_models", "expect"),
    [
        ([], 100, None, "fits"),
        ([loaded("a", 50, 1.0)], 100, None, "fits"),
        ([loaded("a", 50, 2.0), loaded("b", 50, 1.0)], 100, None, "victim b"),
        ([loaded("a", 50, 1.0), loaded("b", 50, 2.0)], 100, None, "victim a"),
        ([loaded("a", 50, 1.0, pending=1), loaded("b", 50, 2.0)], 100, None, "victim b"),
        ([loaded("a", 10, 1.0)], 100, 1, "victim a"),
        ([loaded("a", 10, 1.0, pending=2)], 100, 1, "wait"),
        ([loaded("a", 70, 1.0, pin=True)], 100, None, "refuse pinned"),
        ([], 30, None, "refuse budget"),
    ],
)
def test_plan_room(others: list[PoolEntry], budget: int, max_models: Any, expect: str) -> None:
    plan = plan_room(NEW, others, budget, max_models)
    if expect == "fits":
        assert plan.fits
    elif expect.startswith("victim"):
        assert not plan.fits and plan.victim is not None and plan.victim.name == expect.split()[1]
    elif expect == "wait":
        assert (plan.fits, plan.victim, plan.refusal) == (False, None, None)
    else:
        assert plan.refusal is not None and expect.split()[1] in plan.refusal
