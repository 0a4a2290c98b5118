"""Exceptions raised by mlxnb.

Every error mlxnb raises on purpose derives from :class:`MlxnbError`::

    MlxnbError
    ├── DependencyError      an optional dependency is missing; says what to install
    ├── ModelNotFoundError   no model at the path / repo id (names what was tried)
    ├── ModelLoadError       the model exists but could not be loaded
    │   └── MemoryBudgetError    it would not fit the pool's memory budget (also a MemoryError)
    ├── EngineClosedError    a request reached an engine after ``close()``
    ├── EngineBusyError      the request queue is full, or a request waited too long for memory
    ├── InvalidRequestError  a request is malformed (also a ValueError)
    │   ├── ContextLengthError   prompt + max_tokens over the model's context (before prefill)
    │   ├── KvBudgetError        prompt + max_tokens of KV cache over the KV budget (before prefill)
    │   ├── UnknownOptionError   an option that does not exist (also a TypeError)
    │   └── WrongTypeError       an argument of the wrong type (also a TypeError)
    ├── ConversationBusyError    a reply is running or the model still loading (RuntimeError)
    ├── EmptyHistoryError        no turn to undo (also an IndexError)
    ├── ConversationNotFoundError    no saved conversation has that id (also a LookupError)
    ├── GenerationError      the worker failed while generating (``__cause__`` kept)
    ├── ToolError            a tool call failed (``ToolResult.raise_for_error``)
    ├── AuditError           a closed audit log, or a file that is not an audit table
    ├── ServerStartError     the API server could not bind or start in time
    └── RemoteError          a remote endpoint failed: unreachable, 5xx, refused the key
"""

from __future__ import annotations


class MlxnbError(Exception):
    """Base class of every error raised by mlxnb."""


class DependencyError(MlxnbError, ImportError):
    """An optional dependency is missing."""


class ModelNotFoundError(MlxnbError, LookupError):
    """No model could be found at the given path or repository id."""


class ModelLoadError(MlxnbError):
    """The model was found but could not be loaded."""


class MemoryBudgetError(ModelLoadError, MemoryError):
    """Loading a model would exceed the pool's memory budget, even after unloading idle ones."""


class EngineClosedError(MlxnbError, RuntimeError):
    """A request was made to an engine that has been closed."""


class DistributedError(EngineClosedError):
    """A rank of a sharded model's distributed group stopped: the engine cannot go on."""


class EngineBusyError(MlxnbError, RuntimeError):
    """The engine's request queue is full, or a request waited too long for memory; retry later."""


class GenerationError(MlxnbError, RuntimeError):
    """Generation failed inside the engine's worker thread."""


class ToolError(MlxnbError):
    """A tool call failed: unknown tool, bad arguments, or the function raised."""


class AuditError(MlxnbError, ValueError):
    """The audit log is closed, or a file is not an mlxnb audit table."""


class ServerStartError(MlxnbError, OSError):
    """The API server could not bind its socket or did not start in time."""


class RemoteError(MlxnbError, ConnectionError):
    """A remote endpoint (:func:`mlxnb.endpoint`) failed: unreachable, 5xx, or refused the key.

    Attributes:
        url: The endpoint's base URL (never its API key).
        status: The HTTP status, or ``None`` when the server could not be reached or the
            connection broke.
        streamed: Whether part of the answer had already arrived when it failed.
    """

    def __init__(
        self, message: str, *, url: str = "", status: int | None = None, streamed: bool = False
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.streamed = streamed


class InvalidRequestError(MlxnbError, ValueError):
    """A request is malformed: empty messages, bad sampling values, a template that rejects it."""


class ContextLengthError(InvalidRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context (refused before prefill)."""


class KvBudgetError(InvalidRequestError):
    """The request's KV cache (prompt plus ``max_tokens``) could never fit the engine's KV budget.

    Refused before prefill; a request that fits alone but not beside the running ones waits
    instead (and ends with :class:`EngineBusyError` if it waits too long).
    """


class UnknownOptionError(InvalidRequestError, TypeError):
    """A request names a generation option that does not exist (a typo, usually)."""


class WrongTypeError(InvalidRequestError, TypeError):
    """An argument has the wrong type (a tool that is not a function, a server without engine)."""


class ConversationBusyError(MlxnbError, RuntimeError):
    """A conversation cannot take this now: a reply is running, or its model is still loading."""


class EmptyHistoryError(MlxnbError, IndexError):
    """There is no turn to undo or regenerate."""


class ConversationNotFoundError(MlxnbError, LookupError):
    """No saved conversation has this id (``resume=``) in the audit log's file."""


# -- warnings ----------------------------------------------------------------------------------


class InsecureServerWarning(UserWarning):
    """The API listens beyond this machine without an API key."""
