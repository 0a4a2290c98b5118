"""A model or profile by name, as the doors use it: loads on first use, applies the profile.

A :class:`ModelHandle` has the engine's request API (``stream``, ``stream_sync``, ``generate``,
``agenerate``) but holds no engine: each request asks the pool, so the model loads when first
needed (a request for a model that is loading waits for it), may be evicted between requests,
and comes back when asked for again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from mlxnb._engine.profiles import Profile
from mlxnb._engine.request import RequestMeta
from mlxnb._engine.response_format import with_parsed
from mlxnb._engine.scoring import Score
from mlxnb.errors import EngineClosedError
from mlxnb.events import Event, Turn, acollect, collect

if TYPE_CHECKING:
    from mlxnb._engine.engine import Engine

Messages = Sequence[Mapping[str, Any]]
Tools = Sequence[Mapping[str, Any]] | None


class Loader(Protocol):
    """What a handle needs of its pool (:class:`~mlxnb._engine.pool.ModelPool` has it)."""

    def engine(self, name: str, *, timeout: float | None = None) -> Engine:
        """The loaded engine, loading it first if needed (blocking)."""
        ...

    async def aengine(self, name: str, *, timeout: float | None = None) -> Engine:
        """The loaded engine, awaiting a load without blocking the loop."""
        ...

    def touch(self, name: str) -> None:
        """Count a request and mark the model used now."""
        ...

    def state(self, name: str) -> dict[str, Any]:
        """The model's state as plain data."""
        ...


class ModelHandle:
    """A pooled model (or a profile of one) with the engine's request API.

    Args:
        pool: The pool that loads the model.
        name: The name asked for (a model's or a profile's): responses and listings use it.
        model: The model's name in the pool.
        profile: The profile whose defaults requests get, if ``name`` is one.
    """

    def __init__(self, pool: Loader, name: str, model: str, profile: Profile | None) -> None:
        self.pool = pool
        self.model_id = name
        self.model = model
        self.profile = profile

    @property
    def ready(self) -> bool:
        """Whether the model is loaded now."""
        return bool(self.pool.state(self.model)["state"] == "ready")

    @property
    def closed(self) -> bool:
        """A handle never closes; its model loads again when asked for."""
        return False

    @property
    def engine(self) -> Engine:
        """The loaded engine (loading it first; blocking)."""
        return self.pool.engine(self.model)

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loads the model if needed)."""
        return self.engine.tokenizer

    @property
    def kind(self) -> str:
        """``"text"`` or ``"vision"`` (loads the model if needed)."""
        return self.engine.kind

    @property
    def supports_thinking(self) -> bool:
        """Whether the model's tokenizer knows thinking markers."""
        return self.engine.supports_thinking

    @property
    def supports_tools(self) -> bool:
        """Whether the model's tokenizer has a tool-call format."""
        return self.engine.supports_tools

    def _arguments(
        self, messages: Messages, enable_thinking: bool | None, options: Mapping[str, Any]
    ) -> tuple[Messages, bool | None, dict[str, Any]]:
        if self.profile is None:
            return messages, enable_thinking, dict(options)
        profile = self.profile
        return (
            profile.messages(messages),
            profile.thinking(enable_thinking),
            profile.options(options),
        )

    async def stream(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        """Like :meth:`Engine.stream`; waits for the model to load first.

        Raises:
            ModelNotFoundError: The model is no longer registered.
            ModelLoadError: It could not be loaded.
            EngineBusyError: It is still loading after the pool's load timeout.
        """
        messages, enable_thinking, options = self._arguments(messages, enable_thinking, options)
        for attempt in range(2):
            engine = await self.pool.aengine(self.model)
            self.pool.touch(self.model)
            events = cast(
                AsyncGenerator[Event, None],
                engine.stream(messages, tools, enable_thinking, **options),
            )
            try:
                try:
                    first = await anext(events)
                except EngineClosedError:
                    if attempt:
                        raise
                    continue  # unloaded between the lookup and the submit: load it again
                yield first
                async for event in events:
                    yield event
                return
            finally:
                await events.aclose()

    def stream_sync(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> Iterator[Event]:
        """Blocking twin of :meth:`stream`."""
        messages, enable_thinking, options = self._arguments(messages, enable_thinking, options)
        engine = self.engine
        self.pool.touch(self.model)
        yield from engine.stream_sync(messages, tools, enable_thinking, **options)

    def generate(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> Turn:
        """Like :meth:`Engine.generate`, with the profile's defaults."""
        turn = collect(self.stream_sync(messages, tools, enable_thinking, **options))
        return with_parsed(turn, options)

    async def agenerate(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> Turn:
        """Awaitable twin of :meth:`generate`."""
        turn = await acollect(self.stream(messages, tools, enable_thinking, **options))
        return with_parsed(turn, options)

    async def afits_context(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        max_tokens: int | None = None,
        **options: Any,
    ) -> bool:
        """Like :meth:`Engine.afits_context`, the profile's defaults applied."""
        messages, enable_thinking, merged = self._arguments(
            messages, enable_thinking, {"max_tokens": max_tokens}
        )
        engine = await self.pool.aengine(self.model)
        return await engine.afits_context(
            messages, tools, enable_thinking, max_tokens=merged.get("max_tokens"), **options
        )

    async def acount_tokens(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> int:
        """Like :meth:`Engine.acount_tokens`, the profile's system prompt and thinking applied."""
        messages, enable_thinking, _ = self._arguments(messages, enable_thinking, {})
        engine = await self.pool.aengine(self.model)
        return await engine.acount_tokens(messages, tools, enable_thinking, **options)

    async def ascore(
        self,
        context: str | Sequence[int],
        continuations: Sequence[str | Sequence[int]],
        *,
        meta: RequestMeta | None = None,
    ) -> list[Score]:
        """Like :meth:`Engine.ascore` (a profile's settings do not apply: nothing is sampled)."""
        engine = await self.pool.aengine(self.model)
        self.pool.touch(self.model)
        return await engine.ascore(context, continuations, meta=meta)

    def __repr__(self) -> str:
        profile = f", profile of {self.model!r}" if self.profile is not None else ""
        return f"ModelHandle({self.model_id!r}{profile})"
