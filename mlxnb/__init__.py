"""mlxnb: local language models on MLX, made for Jupyter.

One engine per model lives in the kernel and serves the chat widget, Python code (async event
streams, blocking helpers, evaluation loops) and an OpenAI-compatible HTTP API at once.
"""

from __future__ import annotations

from mlxnb import scorers
from mlxnb._audit import AuditLog, TurnRecord, read_export
from mlxnb._engine import Engine, load
from mlxnb._evaluate import aevaluate, evaluate
from mlxnb._models import default_model
from mlxnb._serve import InsecureServerWarning, ServerHandle, serve
from mlxnb._server import Limits, create_app
from mlxnb.errors import (
    DependencyError,
    EngineBusyError,
    EngineClosedError,
    GenerationError,
    InvalidRequestError,
    MlxnbError,
    ModelLoadError,
    ModelNotFoundError,
    ServerStartError,
    ToolError,
)
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallError,
    Turn,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AuditLog",
    "ContentDelta",
    "DependencyError",
    "Done",
    "Engine",
    "EngineBusyError",
    "EngineClosedError",
    "Event",
    "GenerationError",
    "InsecureServerWarning",
    "InvalidRequestError",
    "Limits",
    "MlxnbError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ServerHandle",
    "ServerStartError",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallError",
    "ToolError",
    "Turn",
    "TurnRecord",
    "Usage",
    "__version__",
    "aevaluate",
    "create_app",
    "default_model",
    "evaluate",
    "load",
    "read_export",
    "scorers",
    "serve",
]
