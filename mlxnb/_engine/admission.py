"""Admission by projected KV memory: which rendered request may start now, which must wait.

A request's KV cache grows to its prompt plus ``max_tokens`` tokens. The worker starts a
request only when that projection fits the KV budget beside the requests already running;
otherwise it waits here, rendered but not prefilled, while requests that do fit go ahead. A
request that could not fit even alone is refused before any forward pass; one that waits
longer than the admission timeout ends with :class:`~mlxnb.errors.EngineBusyError`. Values and
arithmetic only: the worker owns the queue's requests and ends them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mlxnb._engine.backend import Prompt
from mlxnb._engine.memory import KvFootprint
from mlxnb._engine.request import Request
from mlxnb.errors import EngineBusyError, KvBudgetError


@dataclass(frozen=True, eq=False)
class Waiting:
    """A rendered request waiting for KV memory.

    Attributes:
        request: The request.
        prompt: Its rendered prompt.
        since: ``time.perf_counter()`` when it began to wait.
    """

    request: Request
    prompt: Prompt
    since: float

    @property
    def tokens(self) -> int:
        """The most tokens its KV cache will hold: the prompt plus ``max_tokens``."""
        return len(self.prompt.tokens) + self.request.options.max_tokens


class Admission:
    """The KV budget and the queue of requests waiting for it.

    Args:
        kv: The model's KV footprint (``None``: unknown, nothing is held back).
        budget: Bytes of KV the running requests may project together (``None``: no budget).
        timeout: Seconds a request may wait before it ends with ``EngineBusyError``.
        serial: One request at a time (``kv_bits``): the others wait their turn, however long.
        shared: The bytes the process's other engines leave this one now
            (:meth:`mlxnb._engine.kv_ledger.KvLedger.room`; ``None``: this engine alone counts).
    """

    def __init__(
        self,
        kv: KvFootprint | None,
        budget: int | None,
        timeout: float,
        serial: bool = False,
        shared: Callable[[], int] | None = None,
    ) -> None:
        self.kv = kv if budget is not None else None
        self.budget = budget
        self.timeout = timeout
        self.serial = serial
        self.shared = shared if self.kv is not None else None
        self._waiting: deque[Waiting] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def check_alone(self, prompt_tokens: int, max_tokens: int, model_id: str) -> None:
        """Refuse a request whose KV cache could not fit the budget even if it ran alone.

        Raises:
            KvBudgetError: ``prompt_tokens + max_tokens`` tokens of KV exceed the budget.
        """
        if self.kv is None or self.budget is None:
            return
        tokens = prompt_tokens + max_tokens
        need = self.kv.batch_bytes([tokens])
        if need > self.budget:
            raise KvBudgetError(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: the KV "
                f"cache of {tokens} tokens would take {need} bytes ({self.kv.per_token} per "
                f"token) and {model_id}'s KV budget is {self.budget} bytes. Shorten the "
                "conversation, lower max_tokens, or raise kv_budget_bytes."
            )

    def fits(self, running: Sequence[int], tokens: int) -> bool:
        """Whether a request projecting ``tokens`` fits beside ``running`` projections."""
        if self.serial and running:
            return False  # one request at a time (kv_bits): it waits its turn
        if self.kv is None or self.budget is None:
            return True
        need = self.kv.batch_bytes([*running, tokens])
        return need <= self.budget and (self.shared is None or need <= self.shared())

    def projected(self, running: Sequence[int]) -> int:
        """The KV bytes of ``running`` projections together (0 without a footprint)."""
        return 0 if self.kv is None else self.kv.batch_bytes(running)

    def wait(self, request: Request, prompt: Prompt, now: float) -> None:
        """Queue a request that does not fit now."""
        self._waiting.append(Waiting(request, prompt, now))

    def entries(self) -> Iterator[Waiting]:
        """The waiting requests, oldest first (a snapshot: :meth:`take` may be called)."""
        yield from list(self._waiting)

    def take(self, entry: Waiting) -> None:
        """Remove ``entry`` from the queue (it starts, is cancelled, or ends)."""
        self._waiting.remove(entry)

    def expired(self, entry: Waiting, now: float) -> EngineBusyError | None:
        """The error ending ``entry`` if it has waited past the timeout, else ``None``."""
        waited = now - entry.since
        if waited <= self.timeout or self.serial:
            return None
        return EngineBusyError(
            f"waited {waited:.1f} s for KV-cache memory ({entry.tokens} tokens; the KV budget "
            f"is {self.budget} bytes, taken by running requests of this model or of the "
            "process's other models); try again later"
        )
