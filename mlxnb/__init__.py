"""mlxnb: local language models on MLX, made for Jupyter.

One engine per model lives in the kernel and serves the chat widget, Python code (async event
streams, blocking helpers, evaluation loops) and an OpenAI-compatible HTTP API at once.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING, Any

from mlxnb import scorers
from mlxnb._audit import AuditLog, TurnRecord, read_export
from mlxnb._chat import ChatTurn, Conversation
from mlxnb._chat_saved import conversations
from mlxnb._chat_tools import ToolApproval
from mlxnb._chat_turn import ContextTrimmed
from mlxnb._engine import (
    Engine,
    MemoryStats,
    ModelHandle,
    ModelPool,
    Profile,
    Score,
    default_pool,
    load,
    models,
    profile,
    unload,
)
from mlxnb._engine.models import default_model
from mlxnb._evaluate import aevaluate, evaluate
from mlxnb._evaluate_replay import replay
from mlxnb._tools import Tool, ToolResult, tool
from mlxnb._version import __version__
from mlxnb.errors import (
    DependencyError,
    DistributedError,
    EngineBusyError,
    EngineClosedError,
    GenerationError,
    InsecureServerWarning,
    InvalidRequestError,
    KvBudgetError,
    MemoryBudgetError,
    MlxnbError,
    ModelLoadError,
    ModelNotFoundError,
    RemoteError,
    ServerStartError,
    ToolError,
)
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    PrefillProgress,
    ThinkingDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolCallError,
    TopLogprob,
    Turn,
    Usage,
)

if TYPE_CHECKING:
    from mlxnb._remote import Endpoint, Endpoints, endpoint, endpoints
    from mlxnb._server import Limits, create_app
    from mlxnb._server.background import ServerHandle, serve
    from mlxnb._widget import ChatWidget, chat


# Front doors with heavier dependencies (FastAPI, uvicorn, anywidget) load on first use, so
# `import mlxnb` stays quick and engine-only use needs none of them.
_LAZY = {
    "Endpoint": "mlxnb._remote",
    "Endpoints": "mlxnb._remote",
    "endpoint": "mlxnb._remote",
    "endpoints": "mlxnb._remote",
    "ChatWidget": "mlxnb._widget",
    "chat": "mlxnb._widget",
    "Limits": "mlxnb._server",
    "ServerHandle": "mlxnb._server.background",
    "create_app": "mlxnb._server",
    "serve": "mlxnb._server.background",
}


def __getattr__(name: str) -> Any:
    if name == "load_ipython_extension":  # `%load_ext mlxnb` (IPython's hook, not the API)
        return _importlib.import_module("mlxnb._magic").load_ipython_extension
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlxnb' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AuditLog",
    "ChatTurn",
    "ChatWidget",
    "ContentDelta",
    "ContextTrimmed",
    "Conversation",
    "DependencyError",
    "DistributedError",
    "Done",
    "Endpoint",
    "Endpoints",
    "Engine",
    "EngineBusyError",
    "EngineClosedError",
    "Event",
    "GenerationError",
    "InsecureServerWarning",
    "InvalidRequestError",
    "KvBudgetError",
    "Limits",
    "MemoryBudgetError",
    "MemoryStats",
    "MlxnbError",
    "ModelHandle",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelPool",
    "PrefillProgress",
    "Profile",
    "RemoteError",
    "Score",
    "ServerHandle",
    "ServerStartError",
    "ThinkingDelta",
    "TokenLogprob",
    "Tool",
    "ToolApproval",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallError",
    "ToolError",
    "ToolResult",
    "TopLogprob",
    "Turn",
    "TurnRecord",
    "Usage",
    "__version__",
    "aevaluate",
    "chat",
    "conversations",
    "create_app",
    "default_model",
    "default_pool",
    "endpoint",
    "endpoints",
    "evaluate",
    "load",
    "models",
    "profile",
    "read_export",
    "replay",
    "scorers",
    "serve",
    "tool",
    "unload",
]
