"""What the server serves, and the limits it enforces: the seam between the app and the engines.

``app`` and every route module import these (no route module imports ``app``, which imports
them), so the protocols live once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from fastapi import Request

from mlxnb._engine.request import RequestMeta
from mlxnb.errors import ModelNotFoundError, WrongTypeError
from mlxnb.events import Event


class ServedEngine(Protocol):
    """What the server needs of an engine (:class:`mlxnb.Engine` has it all)."""

    model_id: str

    @property
    def ready(self) -> bool:
        """Whether loading has finished."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the engine was closed."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's mlx-lm ``TokenizerWrapper`` (decodes echoed token-id prompts)."""
        ...

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        """Generate one reply as events."""
        ...

    async def acount_tokens(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> int:
        """Tokens the prompt of such a request would hold."""
        ...


if TYPE_CHECKING:  # mypy checks that the real engine fits the seam
    from mlxnb._engine import Engine, ModelHandle

    _engine_fits: type[ServedEngine] = Engine
    _handle_fits: type[ServedEngine] = ModelHandle


class EngineSource(Protocol):
    """What :func:`create_app` serves: model ids, and the engine for one of them.

    A single :class:`~mlxnb.Engine` is adapted to this; :class:`~mlxnb.ModelPool` implements it
    (its handles load a model on its first request, which waits for the load).
    """

    def model_ids(self) -> list[str]:
        """The ids ``GET /v1/models`` lists: the only ones requests may use."""
        ...

    def engine_for(self, model: str) -> ServedEngine:
        """The engine serving ``model``; raises :class:`ModelNotFoundError` for others."""
        ...

    def state(self, model: str) -> Mapping[str, Any]:
        """What ``GET /v1/models/{id}`` adds to the card: ``state``, ``kind`` and the like."""
        ...


class SingleEngine:
    """One engine as an :class:`EngineSource` (it alone is served, under its model id)."""

    def __init__(self, engine: ServedEngine) -> None:
        self.engine = engine

    def model_ids(self) -> list[str]:
        return [str(self.engine.model_id)]

    def engine_for(self, model: str) -> ServedEngine:
        if model != str(self.engine.model_id):
            raise ModelNotFoundError(model)
        return self.engine

    def state(self, model: str) -> Mapping[str, Any]:
        engine = self.engine_for(model)
        return {"state": "unloaded" if engine.closed else "ready" if engine.ready else "loading"}


if TYPE_CHECKING:
    from mlxnb._engine import ModelPool

    _pool_fits: type[EngineSource] = ModelPool


def as_source(target: ServedEngine | EngineSource) -> EngineSource:
    if hasattr(target, "model_ids") and hasattr(target, "engine_for"):
        return cast(EngineSource, target)
    if hasattr(target, "stream") and hasattr(target, "model_id"):
        return SingleEngine(target)
    raise WrongTypeError(f"create_app needs an Engine or a model pool, not {type(target).__name__}")


@dataclass(frozen=True)
class Limits:
    """Request limits the server enforces beyond the schema's own.

    Attributes:
        max_body_bytes: Largest request body (413 above).
        max_tokens: Largest ``max_tokens`` a request may ask for (422 above).
    """

    max_body_bytes: int = 32 * 1024 * 1024  # room for a 20 MB image as a base64 data URL
    max_tokens: int = 32_768


def http_meta(
    request: Request,
    request_id: str,
    *,
    endpoint: str | None = None,
    conversation_id: str | None = None,
) -> RequestMeta:
    """Who asks, for the audit row of an HTTP request (never trusted to read local files)."""
    client = request.client
    return RequestMeta(
        source="server",
        endpoint=endpoint or request.url.path,
        conversation_id=conversation_id,
        client=f"{client.host}:{client.port}" if client else None,
        request_id=request_id,
        trusted=False,  # an HTTP request never makes the kernel read a local file
    )
