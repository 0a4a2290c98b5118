"""What a remote model has as an engine besides its own ``stream`` and ``agenerate``.

``Endpoint`` (one server) and ``Endpoints`` (several) both build on :class:`RemoteEngine`:
nothing to load or release, the blocking twins (``stream_sync``, ``generate``) of their
``stream`` and ``agenerate``, and the refusal of scoring, which needs the model's process.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any

from mlxnb._blocking import run_blocking
from mlxnb._remote.sync import iterate_sync
from mlxnb.errors import InvalidRequestError
from mlxnb.events import Event, Turn

Messages = Sequence[Mapping[str, Any]]
Tools = Sequence[Mapping[str, Any]] | None


class RemoteEngine:
    """The engine API a remote model shares; subclasses give ``stream`` and ``agenerate``."""

    stream: Callable[..., AsyncGenerator[Event, None]]
    """Generate a reply as an async stream of events (each subclass defines it)."""
    agenerate: Callable[..., Coroutine[Any, Any, Turn]]
    """The whole reply (each subclass defines it)."""

    # -- what the doors read ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Always True: there is nothing to load here."""
        return True

    @property
    def closed(self) -> bool:
        """Always False: each request opens its own connection."""
        return False

    def wait_ready(self, timeout: float | None = None) -> None:
        """Nothing to wait for (an engine's twin)."""

    async def await_ready(self) -> None:
        """Nothing to wait for (an engine's twin)."""

    def close(self) -> None:
        """Nothing to release: each request's connection closes with it."""

    # -- the blocking twins ----------------------------------------------------------------

    def stream_sync(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: Any = None,
        **options: Any,
    ) -> Iterator[Event]:
        """Blocking twin of :meth:`stream` (a private loop in a helper thread); same events."""
        return iterate_sync(
            lambda: self.stream(messages, tools, enable_thinking, meta=meta, **options)
        )

    def generate(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: Any = None,
        **options: Any,
    ) -> Turn:
        """The whole reply, blocking (works inside a Jupyter cell); arguments as :meth:`stream`."""
        return run_blocking(self.agenerate(messages, tools, enable_thinking, meta=meta, **options))

    # -- what needs the model's process ----------------------------------------------------

    async def ascore(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: scoring choices needs the model's log-likelihoods, in its own process.

        Raises:
            InvalidRequestError: Always.
        """
        raise InvalidRequestError(
            f"{self!r} cannot score choices: log-likelihoods need a local engine (mlxnb.load)"
        )

    def score(self, *args: Any, **kwargs: Any) -> Any:
        """Refused, as :meth:`ascore`.

        Raises:
            InvalidRequestError: Always.
        """
        return run_blocking(self.ascore(*args, **kwargs))
