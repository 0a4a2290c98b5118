"""One KV budget for every engine of the process: two models must not each count on the same bytes.

Each engine's own KV budget (:func:`mlxnb._engine.memory.plan_memory`) is the device's memory
less its own weights and prompt cache. Two engines resident at once (a pool with two models, a
model and its judge) would each count on the memory the other's weights hold, and together
admit more KV than the device has: out of memory, which MLX does not always survive. The ledger
keeps what every engine with a KV budget holds (weights and prompt-cache cap) and projects (its
running requests' KV), so an engine admits a request only if it also fits what the others leave.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from mlxnb._engine.memory import KV_FLOOR_SHARE, KV_SHARE


@dataclass
class _Member:
    fixed: int  # weights and prompt-cache cap: held while the engine lives
    projected: int = 0  # its running requests' KV, as their caches will grow


class KvLedger:
    """The KV memory the process's engines hold and project, against one shared total.

    The total is :data:`~mlxnb._engine.memory.KV_SHARE` of the device's memory less every
    engine's weights and prompt-cache cap (at least
    :data:`~mlxnb._engine.memory.KV_FLOOR_SHARE` of it), as each engine's own budget is for
    itself alone. Thread-safe: each engine's worker reads and writes its own entry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[int, _Member] = {}
        self._device = 0

    def join(self, owner: int, fixed: int, device: int) -> None:
        """Count an engine: ``fixed`` bytes held while it lives, on a device of ``device`` bytes."""
        with self._lock:
            self._members[owner] = _Member(fixed)
            self._device = max(self._device, device)

    def leave(self, owner: int) -> None:
        """Stop counting an engine (closed): what it held is free for the others."""
        with self._lock:
            self._members.pop(owner, None)

    def project(self, owner: int, projected: int) -> None:
        """Set the KV bytes ``owner``'s running requests will hold together."""
        with self._lock:
            member = self._members.get(owner)
            if member is not None:
                member.projected = projected

    def room(self, owner: int) -> int:
        """The KV bytes ``owner``'s running requests may project, given what the others hold."""
        with self._lock:
            fixed = sum(member.fixed for member in self._members.values())
            total = max(int(self._device * KV_SHARE) - fixed, int(self._device * KV_FLOOR_SHARE))
            others = sum(member.projected for key, member in self._members.items() if key != owner)
            return total - others

    def __len__(self) -> int:
        return len(self._members)


LEDGER = KvLedger()
"""The process's ledger (one device, one memory)."""
