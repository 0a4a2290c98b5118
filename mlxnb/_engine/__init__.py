"""The engine family: one model on one worker thread, serving every front door.

:mod:`~mlxnb._engine.engine` is the public face (``Engine``, ``load``); the rest is the worker's
machinery. See ``ARCHITECTURE.md`` for how a request travels through these modules.
"""

from mlxnb._engine.engine import Engine
from mlxnb._engine.handle import ModelHandle
from mlxnb._engine.memory import MemoryStats
from mlxnb._engine.pool import ModelPool
from mlxnb._engine.profiles import Profile
from mlxnb._engine.scoring import Score
from mlxnb._engine.shared_pool import default_pool, load, models, profile, unload

__all__ = [
    "Engine",
    "MemoryStats",
    "ModelHandle",
    "ModelPool",
    "Profile",
    "Score",
    "default_pool",
    "load",
    "models",
    "profile",
    "unload",
]
