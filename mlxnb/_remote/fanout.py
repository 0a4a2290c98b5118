"""One model over several servers: ``Endpoints`` sends each request to the least-loaded one.

A server that cannot be reached, breaks a connection or answers 5xx is skipped for a while
(``dead_for`` seconds) and the request goes to another: a whole turn (``agenerate``, which
:func:`mlxnb.evaluate` uses) is re-run from the start on the next server, so an evaluation
finishes every row when a server dies mid-run; a stream is moved only before its first event
(nothing already shown is replayed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from mlxnb._audit import AuditLog
from mlxnb._remote.client import Endpoint
from mlxnb._remote.engine import Messages, RemoteEngine, Tools
from mlxnb.errors import InvalidRequestError, RemoteError
from mlxnb.events import Event, Turn


def _server_failed(error: RemoteError) -> bool:
    """Whether another server may answer: unreachable, broken connection, or a 5xx."""
    return error.status is None or error.status >= 500


class Endpoints(RemoteEngine):
    """One model served by several OpenAI-compatible servers, used like one engine.

    Prefer :func:`mlxnb.endpoints`. Each request goes to the server with the fewest requests
    in flight (its own ``max_concurrency`` bounds each server); a failed server is skipped for
    ``dead_for`` seconds and its requests run on the others.

    Args:
        urls: The servers' base URLs.
        model: The model's name on every server.
        api_key: Sent to every server as ``Authorization: Bearer`` (never recorded).
        max_concurrency: Most requests in flight per server.
        dead_for: Seconds a failed server is skipped before it is tried again.
        audit: Where turns are recorded (one row per attempt, naming its server).
        **options: Further :class:`Endpoint` arguments (``retries``, ``backoff``, ``timeout``,
            ``supports_thinking``, ``kind``).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        model: str,
        api_key: str | None = None,
        max_concurrency: int = 8,
        dead_for: float = 30.0,
        audit: AuditLog | Literal[False] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(urls, str) or not urls:
            raise InvalidRequestError("endpoints() takes a list of one or more server URLs")
        shared = AuditLog() if audit is None else audit
        self.members = [
            Endpoint(
                url,
                model=model,
                api_key=api_key,
                max_concurrency=max_concurrency,
                audit=shared,
                **options,
            )
            for url in urls
        ]
        self.model_id = model
        self.kind = self.members[0].kind
        self.dead_for = dead_for
        self.audit = shared or None
        self._load = [0] * len(self.members)
        self._dead_until = [0.0] * len(self.members)

    @property
    def supports_thinking(self) -> bool:
        """Whether the model thinks, as given."""
        return self.members[0].supports_thinking

    @property
    def alive(self) -> list[str]:
        """The servers not being skipped now."""
        now = time.monotonic()
        return [
            m.public_url for m, t in zip(self.members, self._dead_until, strict=True) if t <= now
        ]

    def __repr__(self) -> str:
        urls = [member.public_url for member in self.members]
        return f"Endpoints({urls!r}, model={self.model_id!r})"

    def _pick(self, tried: set[int]) -> int | None:
        """The least-loaded server not yet tried; live servers before skipped ones."""
        now = time.monotonic()
        left = [i for i in range(len(self.members)) if i not in tried]
        if not left:
            return None
        return min(left, key=lambda i: (self._dead_until[i] > now, self._load[i], i))

    def _failed(self, index: int) -> None:
        self._dead_until[index] = time.monotonic() + self.dead_for

    async def stream(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: Any = None,
        **options: Any,
    ) -> AsyncGenerator[Event, None]:
        """Stream a reply from the least-loaded server; arguments as :meth:`Endpoint.stream`.

        A server that fails before the first event is skipped and the next one asked; once
        events have been yielded, a failure raises :class:`~mlxnb.errors.RemoteError`.
        """
        tried: set[int] = set()
        while True:
            index = self._pick(tried)
            assert index is not None
            tried.add(index)
            self._load[index] += 1
            events = self.members[index].events(
                messages, tools, enable_thinking, meta=meta, options=options, failover=True
            )
            started = False
            try:
                async for event in events:
                    started = True
                    yield event
                return
            except RemoteError as error:
                if not _server_failed(error):
                    raise
                self._failed(index)
                if started or len(tried) == len(self.members):
                    raise
            finally:
                self._load[index] -= 1
                await events.aclose()

    async def agenerate(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: Any = None,
        **options: Any,
    ) -> Turn:
        """The whole reply; a server that fails, even mid-answer, hands the turn to another.

        Raises:
            RemoteError: Every server failed.
        """
        return await self._turn(messages, tools, enable_thinking, meta, options)

    async def _turn(
        self,
        messages: Messages,
        tools: Tools,
        enable_thinking: bool | None,
        meta: Any,
        options: Mapping[str, Any],
    ) -> Turn:
        tried: set[int] = set()
        while True:
            index = self._pick(tried)
            assert index is not None
            tried.add(index)
            self._load[index] += 1
            try:
                return await self.members[index].turn(
                    messages, tools, enable_thinking, meta=meta, options=options, failover=True
                )
            except RemoteError as error:
                if not _server_failed(error):
                    raise
                self._failed(index)
                if len(tried) == len(self.members):
                    raise
            finally:
                self._load[index] -= 1
