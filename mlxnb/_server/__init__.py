"""The server family: the OpenAI-compatible ``/v1`` API, in a background thread or a CLI.

``app`` builds the FastAPI app and its routes; ``schemas`` validates request bodies; ``openai``
translates engine events to wire shapes; ``errors``, ``middleware`` and ``response`` are the
HTTP plumbing; ``background`` runs uvicorn in a kernel thread; ``cli`` is ``mlxnb serve``.
"""

from mlxnb._server.app import create_app
from mlxnb._server.background import ServerHandle, serve
from mlxnb._server.source import EngineSource, Limits

__all__ = ["EngineSource", "Limits", "ServerHandle", "create_app", "serve"]
