"""The engine family: one model on one worker thread, serving every front door.

:mod:`~mlxnb._engine.engine` is the public face (``Engine``, ``load``); the rest is the worker's
machinery. See ``ARCHITECTURE.md`` for how a request travels through these modules.
"""

from mlxnb._engine.engine import Engine, load

__all__ = ["Engine", "load"]
