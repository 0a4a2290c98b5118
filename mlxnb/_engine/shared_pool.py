"""The kernel's model pool and the module-level functions over it (``mlxnb.load`` and friends)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxnb._engine.engine import Engine
from mlxnb._engine.lockstep import join_group
from mlxnb._engine.pool import ModelPool
from mlxnb._engine.profiles import Profile

if TYPE_CHECKING:
    import pandas as pd

_default: ModelPool | None = None
_default_lock = threading.Lock()


def default_pool() -> ModelPool:
    """The kernel's pool, behind :func:`mlxnb.load`, profiles and the doors' model names."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelPool(hf_cache=True)
        return _default


def load(model: str | Path, **options: Any) -> Engine:
    """Load a model (once per kernel) and return its engine.

    The kernel's model pool keeps it: loading the same model again, or naming it in the widget's
    picker, ``evaluate()`` or an HTTP request, uses the same engine. Models loaded here are
    pinned (never evicted to make room); close one with ``engine.close()`` or
    :func:`unload`.

    With ``distributed=True`` in a program started by ``mlx.launch``, the model is sharded
    over the group's processes: rank 0 gets the engine and serves every front door, and on the
    other ranks this call does not return: the process follows rank 0 step for step and exits
    once rank 0's engine closes (status 0; 1 if rank 0 is lost).

    Args:
        model: A local model directory (e.g. from :func:`mlxnb.testing.tiny_model`) or a
            Hugging Face repo id such as ``"mlx-community/Qwen3-0.6B-4bit"``.
        **options: ``name=`` and ``pin=`` for the pool; the rest see :class:`Engine`.

    Returns:
        The ready engine.

    Raises:
        ModelNotFoundError: Nothing found at the path / repo id (the message says what was
            tried).
        ModelLoadError: The model exists but could not be loaded (``MemoryBudgetError`` when it
            would not fit the pool's memory budget).
    """
    if options.get("distributed"):
        status = follow_unless_leading(model, **options)
        if status is not None:
            raise SystemExit(status)
    return default_pool().load(model, **options)


def follow_unless_leading(model: str | Path, **options: Any) -> int | None:
    """On a rank other than 0 of an ``mlx.launch`` group, follow rank 0 to the end.

    Args:
        model: The model rank 0 loads.
        **options: The options rank 0's engine got.

    Returns:
        ``None`` on rank 0 or a process alone in its group (it loads the model itself), else
        the exit status :func:`follow` returned.
    """
    lockstep = join_group()
    if lockstep is None or lockstep.leads:
        return None
    return follow(model, **options)


def follow(model: str | Path, **options: Any) -> int:
    """Run a follower rank of a sharded model until rank 0's engine closes.

    Args:
        model: The model rank 0 loads.
        **options: The options rank 0's engine got (rank 0 sends its settings; the pool's
            ``name=`` and ``pin=`` are ignored).

    Returns:
        The process's exit status: 0 once rank 0 closed its engine, 1 if the group failed.
    """
    engine_options = {k: v for k, v in options.items() if k not in ("name", "pin", "audit")}
    engine = Engine(model, audit=False, **{**engine_options, "distributed": True})
    return engine.follow()


def models() -> pd.DataFrame:
    """The kernel's models and profiles: id, kind, state, memory, requests served, last used."""
    return default_pool().models()


def unload(name: str) -> None:
    """Close a model's engine in the kernel's pool (it loads again when next used)."""
    default_pool().unload(name)


def profile(
    name: str,
    model: str | Path,
    *,
    system: str | None = None,
    enable_thinking: bool | None = None,
    **sampling: Any,
) -> Profile:
    """Register a profile: a model plus defaults, usable by name in every door.

    ``mlxnb.chat("coder")``, ``evaluate(model="coder")`` and an HTTP request with
    ``"model": "coder"`` all run the profile's model with its defaults; a request's own
    settings win.

    Args:
        name: The profile's name.
        model: A registered model name, a local directory or a repo id.
        system: System prompt put first when a conversation has none.
        enable_thinking: Thinking on or off unless a request says.
        **sampling: Defaults such as ``temperature=0.2``, ``max_tokens=2048``.

    Returns:
        The registered :class:`Profile`.
    """
    return default_pool().add_profile(
        Profile(name, str(model), system=system, enable_thinking=enable_thinking, sampling=sampling)
    )
