"""The chat widget's models: names → engines through a model pool, and whether one is loaded.

A widget opened on a name (``mlxnb.chat("coder")``), a path or a :class:`ModelHandle` chats
through a pool, so its picker can offer the pool's other models and profiles. A widget opened
on an :class:`~mlxnb.Engine` keeps that engine for its own name, and offers other models only
when given ``models=[...]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlxnb._chat import ChatEngine
from mlxnb._engine import ModelHandle, ModelPool, default_pool
from mlxnb.errors import MlxnbError, ModelNotFoundError

LoadState = Literal["loading", "ready", "error"]


@dataclass(frozen=True)
class Readiness:
    """Where an engine's model stands: loading, ready (with its engine) or failed."""

    state: LoadState
    engine: Any = None
    error: BaseException | None = None


def is_path_or_repo(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` reads as a directory or a Hugging Face repo id (``org/name``)."""
    text = os.fspath(model)
    return Path(text).expanduser().exists() or "/" in text or text.startswith(("~", "."))


def pooled(model: str | os.PathLike[str], pool: ModelPool) -> ChatEngine:
    """The pool's handle for a model or profile name, a directory or a repo id (registered).

    Raises:
        ModelNotFoundError: A bare name the pool does not know (the message lists the names).
    """
    text = os.fspath(model)
    if is_path_or_repo(model):
        try:  # already registered: under its name (a path is found by where it points)
            name, profile = pool.lookup(text)
        except ModelNotFoundError:
            name, profile = pool.register(text), None
        text = text if profile is not None else name
    handle: ChatEngine = pool.handle(text)
    return handle


class ModelChoice:
    """The models a chat widget offers, and how a picked name becomes an engine.

    Args:
        engine: The engine or handle the widget starts with.
        models: The names to offer (``None``: the pool's names for a pooled engine, else only
            the engine's own).
        pool: Where names are looked up (default: a handle's own pool, else the kernel's).
    """

    def __init__(
        self, engine: ChatEngine, models: Sequence[str] | None, pool: ModelPool | None
    ) -> None:
        if pool is None and isinstance(engine, ModelHandle) and isinstance(engine.pool, ModelPool):
            pool = engine.pool
        self._pool = pool
        self._given = list(models) if models is not None else None
        self._pooled = isinstance(engine, ModelHandle)
        # an engine given directly answers for its own name; other names go through the pool
        self._own = {} if self._pooled else {engine.model_id: engine}

    @property
    def pool(self) -> ModelPool:
        """The pool picked names are looked up in (the kernel's unless one was given)."""
        if self._pool is None:
            self._pool = default_pool()
        return self._pool

    def names(self, current: str) -> list[str]:
        """The names to offer now (``current`` always among them)."""
        if self._given is not None:
            names = list(self._given)
        elif self._pooled:
            names = self.pool.names()
        else:
            names = []
        return names if current in names else [current, *names]

    def engine_for(self, name: str) -> ChatEngine:
        """The engine for a picked name.

        Raises:
            ModelNotFoundError: Neither offered by the widget's own engine nor known to the pool.
        """
        own = self._own.get(name)
        if own is not None:
            return own
        return pooled(name, self.pool)


def readiness(engine: ChatEngine) -> Readiness:
    """Whether ``engine``'s model is loaded now, never blocking and never starting a load.

    A handle whose model is not loaded reads as loading: the widget's load task (``await
    pool.aengine``) loads it, and reports a failure with the load's own exception.
    """
    if isinstance(engine, ModelHandle):
        if engine.pool.state(engine.model)["state"] != "ready":
            return Readiness("loading")
        try:
            return Readiness("ready", engine.pool.engine(engine.model, timeout=0))
        except TimeoutError:  # unloaded just now: the load task brings it back
            return Readiness("loading")
        except Exception as exc:
            return Readiness("error", error=exc)
    if not engine.ready:
        return Readiness("loading")
    wait_ready = getattr(engine, "wait_ready", None)  # raises the load's error, if any
    try:
        if wait_ready is not None:
            wait_ready(0)
    except Exception as exc:
        return Readiness("error", error=exc)
    return Readiness("ready", engine)


def context_limit_of(engine: ChatEngine) -> int | None:
    """The model's context length if it is known without loading anything, else ``None``.

    A pooled model's engine is asked only while it is loaded; a remote endpoint has none.
    """
    if isinstance(engine, ModelHandle):
        if not engine.ready:
            return None
        engine = engine.engine  # loaded: returns at once
    try:
        limit = getattr(engine, "context_length", None)
    except MlxnbError:  # closed meanwhile
        return None
    return limit if isinstance(limit, int) and limit > 0 else None
