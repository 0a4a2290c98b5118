"""Several samples of one prompt, one prefill: followers wait for a leader's prefix.

Requests that share a ``fork_key`` (the ``n`` samples of one prompt from ``evaluate(n=…)``
or ``/v1/completions``) have the same prompt. The first to start leads: the batch prefills its
prompt but the last token as a segment of its own, and that prefix goes into the prompt cache.
The others wait here meanwhile and then start from the cache: each processes one prompt token
instead of the whole prompt. A leader that ends before its prefix is stored (cancelled,
failed) releases its followers to prefill on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Forks:
    """The leaders prefilling a shared prompt, and the requests waiting on each."""

    _leaders: dict[int, str] = field(default_factory=dict)  # uid -> fork key
    _waiting: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self._leaders)

    def wait(self, key: str | None, request: Any, prompt: Any) -> bool:
        """Park ``request`` if a twin is prefilling its prompt; returns whether it did."""
        if key is None or key not in self._waiting:
            return False
        self._waiting[key].append((request, prompt))
        return True

    def lead(self, key: str, uid: int) -> None:
        """The request ``uid`` prefills the prompt of ``key`` for its twins."""
        self._leaders[uid] = key
        self._waiting[key] = []

    def is_leader(self, uid: int) -> bool:
        """Whether ``uid`` is prefilling a shared prompt."""
        return uid in self._leaders

    def release(self, uid: int) -> list[tuple[Any, Any]]:
        """The requests that waited on leader ``uid`` (none if it leads nothing)."""
        key = self._leaders.pop(uid, None)
        return [] if key is None else self._waiting.pop(key, [])

    def projections(self) -> list[int]:
        """The most tokens each waiting request's KV cache will hold once it starts.

        They are admitted already, so the KV budget counts them as running: a burst of
        samples must not start past it when their leader's prefix is stored.
        """
        return [
            len(prompt.tokens) + request.options.max_tokens
            for entries in self._waiting.values()
            for request, prompt in entries
        ]

    def release_all(self) -> list[tuple[Any, Any]]:
        """Every waiting request (the worker is failing or closing)."""
        waiting = [entry for entries in self._waiting.values() for entry in entries]
        self._leaders.clear()
        self._waiting.clear()
        return waiting
