"""mlxnb: local language models on MLX, made for Jupyter.

One engine per model lives in the kernel and serves the chat widget, Python code (async event
streams, blocking helpers, evaluation loops) and an OpenAI-compatible HTTP API at once.
"""

from __future__ import annotations

from mlxnb._engine import Engine, load
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
    "ContentDelta",
    "DependencyError",
    "Done",
    "Engine",
    "EngineBusyError",
    "EngineClosedError",
    "Event",
    "GenerationError",
    "InvalidRequestError",
    "MlxnbError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ServerStartError",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallError",
    "ToolError",
    "Turn",
    "Usage",
    "__version__",
    "load",
]
