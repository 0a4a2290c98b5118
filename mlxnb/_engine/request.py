"""A generation request as it travels from a caller to the worker, and how events come back."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from mlxnb.errors import InvalidRequestError
from mlxnb.events import Event

Item = list[Event] | BaseException


@dataclass(frozen=True)
class SamplingOptions:
    """Per-request sampling settings.

    Attributes:
        max_tokens: Most tokens to generate.
        temperature: 0 means greedy.
        top_p: Nucleus sampling mass (1.0 = off).
        top_k: Keep the k most likely tokens (0 = off).
        min_p: Drop tokens below ``min_p`` times the top probability (0 = off).
        repetition_penalty: Multiplicative penalty on recent tokens (None = off).
        presence_penalty: Additive penalty on tokens already present (None = off).
        frequency_penalty: Additive penalty proportional to frequency (None = off).
        seed: Seeds MLX's generator when the request starts (reproducible when run alone).
        stop: Strings that end the output (not included in it).
        logits_processors: Extra mlx-lm logits processors for this request.
    """

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logits_processors: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (
                self.repetition_penalty is None or self.repetition_penalty > 0,
                "repetition_penalty must be > 0",
            ),
            (all(isinstance(s, str) for s in self.stop), "stop must be strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)


@dataclass(frozen=True)
class TurnMeta:
    """Who asked, for the audit row.

    Attributes:
        request_id: Unique, time-sortable id.
        source: ``widget``, ``python``, ``eval`` or ``server``.
        conversation_id: Groups the turns of one conversation.
        endpoint: The HTTP route or API used.
        client: The HTTP client's address.
        run_id: The evaluation run.
        started_at: Wall-clock start (UTC).
    """

    request_id: str
    source: str = "python"
    conversation_id: str | None = None
    endpoint: str | None = None
    client: str | None = None
    run_id: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


class AsyncSink:
    """Delivers events to a consumer on an asyncio loop (thread-safe on the producing side)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue()

    def put(self, item: Item) -> bool:
        """Hand ``item`` to the consumer's loop; ``False`` when that loop is gone."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            return False
        return True

    async def get(self) -> Item:
        """Wait for the next item."""
        return await self.queue.get()


class SyncSink:
    """Delivers events to a blocking consumer thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()

    def put(self, item: Item) -> bool:
        """Hand ``item`` to the consumer."""
        self._queue.put(item)
        return True

    def get(self, timeout: float | None = None) -> Item:
        """Wait for the next item (``queue.Empty`` after ``timeout``)."""
        return self._queue.get(timeout=timeout)


@dataclass
class Request:
    """One request in flight; the worker owns it once submitted (except ``cancel``)."""

    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[Mapping[str, Any]] | None
    enable_thinking: bool | None
    template_kwargs: Mapping[str, Any] | None
    options: SamplingOptions
    meta: TurnMeta
    sink: AsyncSink | SyncSink
    prompt: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)


class Outbox:
    """Collects one generation step's items and hands them over in one wake-up per loop.

    With many streams on one event loop (a server, an evaluation run), one
    ``call_soon_threadsafe`` per stream per token would wake that loop N times a step and
    contend for the GIL with the worker; one batch per loop per step wakes it once.
    """

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Request, Item]]] = {}

    def put(self, request: Request, item: Item) -> None:
        """Queue ``item`` for ``request``'s consumer (blocking consumers get it at once)."""
        sink = request.sink
        if isinstance(sink, AsyncSink):
            self._by_loop.setdefault(sink.loop, []).append((request, item))
        else:
            sink.put(item)

    def flush(self) -> None:
        """Send what was queued; consumers whose loop is gone are cancelled."""
        batches, self._by_loop = self._by_loop, {}
        for loop, items in batches.items():
            try:
                loop.call_soon_threadsafe(_hand_over, items)
            except RuntimeError:
                for request, _ in items:
                    request.cancel.set()


def _hand_over(items: list[tuple[Request, Item]]) -> None:
    for request, item in items:
        sink = request.sink
        assert isinstance(sink, AsyncSink)
        sink.queue.put_nowait(item)
