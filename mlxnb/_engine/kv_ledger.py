"""One KV budget for every engine of the process: two models must not each count on the same bytes.

Each engine's own KV budget (:func:`mlxnb._engine.memory.plan_memory`) is the device's memory
less its own weights and prompt cache. Two engines resident at once (a pool with two models, a
model and its judge) would each count on the memory the other's weights hold, and together
admit more KV than the device has: out of memory, which MLX does not always survive. The ledger
keeps what every engine with a KV budget holds (its weights, and what its prompt cache holds
now) and projects (its running requests' KV), so an engine admits a request only if it also
fits what the others leave. A prompt cache counts by what it holds, not by its cap: a resident
model with an empty cache must not halve another's room. (A finished request's KV moves into
its prompt cache: the bytes it projected become bytes held.)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from mlxnb._engine.memory import KV_FLOOR_SHARE, KV_SHARE


@dataclass
class _Member:
    weights: int  # held while the engine lives
    held: int = 0  # what its prompt cache holds now
    projected: int = 0  # its running requests' KV, as their caches will grow


class KvLedger:
    """The KV memory the process's engines hold and project, against one shared total.

    The total is :data:`~mlxnb._engine.memory.KV_SHARE` of the device's memory less every
    engine's weights and prompt-cache contents (at least
    :data:`~mlxnb._engine.memory.KV_FLOOR_SHARE` of it). Thread-safe: each engine's worker
    reads and writes its own entry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[int, _Member] = {}
        self._device = 0

    def join(self, owner: int, weights: int, device: int) -> None:
        """Count an engine: its ``weights`` bytes, on a device of ``device`` bytes."""
        with self._lock:
            self._members[owner] = _Member(weights)
            self._device = max(self._device, device)

    def leave(self, owner: int) -> None:
        """Stop counting an engine (closed): what it held is free for the others."""
        with self._lock:
            self._members.pop(owner, None)

    def project(self, owner: int, projected: int, held: int = 0) -> None:
        """Set the KV bytes ``owner``'s running requests will hold together, and its cache's."""
        with self._lock:
            member = self._members.get(owner)
            if member is not None:
                member.projected, member.held = projected, held

    def room(self, owner: int) -> int:
        """The KV bytes ``owner``'s running requests may project, given what the others hold."""
        with self._lock:
            fixed = sum(member.weights + member.held for member in self._members.values())
            total = max(int(self._device * KV_SHARE) - fixed, int(self._device * KV_FLOOR_SHARE))
            others = sum(member.projected for key, member in self._members.items() if key != owner)
            return total - others

    def __len__(self) -> int:
        return len(self._members)


LEDGER = KvLedger()
"""The process's ledger (one device, one memory)."""
