"""Serve the OpenAI-compatible API from inside a running kernel.

:func:`serve` binds the socket in the caller (so "address in use" is an immediate, clear
error), runs uvicorn on a daemon thread with its own event loop, waits for start-up with a
deadline, and returns a :class:`ServerHandle` at once. Engines are shared with the kernel: the
server's loop only awaits ``engine.stream``; MLX stays on each engine's worker thread.
"""

from __future__ import annotations

import errno
import html
import ipaddress
import logging
import socket
import threading
import time
import warnings
from typing import Any

from mlxnb._server.app import create_app
from mlxnb._server.source import EngineSource, Limits, ServedEngine
from mlxnb.errors import InsecureServerWarning, ServerStartError

log = logging.getLogger("mlxnb.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, api_key: str | None) -> None:
    """Warn loudly when a non-loopback address is served without an API key."""
    if api_key or is_loopback(host):
        return
    message = (
        f"mlxnb: serving on {host} WITHOUT an API key: anyone who can reach this machine can "
        "use the model. Pass api_key=... (CLI: --api-key) or bind 127.0.0.1."
    )
    log.warning(message)
    warnings.warn(message, InsecureServerWarning, stacklevel=3)


def bind_socket(host: str, port: int) -> socket.socket:
    """Create a listening TCP socket on ``host:port`` (``port=0`` picks a free one).

    Raises:
        ServerStartError: The address is in use or cannot be bound.
    """
    plain = host.strip("[]")
    family = socket.AF_INET6 if ":" in plain else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a stopped server's port be reused at once; never lets two servers share it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((plain, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        reason = "the port is already in use" if error.errno == errno.EADDRINUSE else error
        raise ServerStartError(f"cannot listen on {host}:{port}: {reason}") from error
    return sock


def _url_host(host: str) -> str:
    plain = host.strip("[]")
    if plain in ("0.0.0.0", "::"):
        return "127.0.0.1" if plain == "0.0.0.0" else "[::1]"
    return f"[{plain}]" if ":" in plain else plain


class ServerHandle:
    """A running API server: where it is, what it serves, and how to stop it.

    Use as a context manager to stop it on exit. In a notebook it shows its URL, models,
    status and the requests it has served.

    Attributes:
        host: The address it listens on.
        port: The port it listens on.
        url: The OpenAI base URL (``http://127.0.0.1:PORT/v1``).
        app: The FastAPI app (``app.state.stats`` has live counters).
    """

    def __init__(
        self, app: Any, server: Any, thread: threading.Thread, sock: socket.socket, host: str
    ) -> None:
        self.app = app
        self.host = host
        self.port: int = sock.getsockname()[1]
        self.url = f"http://{_url_host(host)}:{self.port}/v1"
        self.api_key_required = False
        self._server = server
        self._thread = thread
        self._sock = sock
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def models(self) -> list[str]:
        """The model ids served."""
        return list(self.app.state.source.model_ids())

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return not self._stopped and self._thread.is_alive()

    @property
    def requests_served(self) -> int:
        """Generations answered in full so far."""
        return int(self.app.state.stats.served)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and free the port; in-flight generations are cancelled. Idempotent.

        Args:
            timeout: Seconds to wait for a graceful shutdown before forcing it.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _status(self) -> str:
        return "running" if self.running else "stopped"

    def __repr__(self) -> str:
        return (
            f"ServerHandle({self.url!r}, models={self.models}, {self._status()}, "
            f"served={self.requests_served})"
        )

    def _repr_html_(self) -> str:
        stats = self.app.state.stats
        rows = [
            (
                "URL",
                f'<a href="{html.escape(self.url)}/models" target="_blank">'
                f"<code>{html.escape(self.url)}</code></a>",
            ),
            ("Model", "<br>".join(f"<code>{html.escape(m)}</code>" for m in self.models)),
            ("Status", self._status()),
            ("API key", "required" if self.api_key_required else "none (loopback only)"),
            (
                "Requests",
                f"{stats.served} served, {stats.active} active, "
                f"{stats.failed} failed, {stats.cancelled} cancelled",
            ),
        ]
        body = "".join(
            f'<tr><th style="text-align:left;padding-right:1em">{k}</th><td>{v}</td></tr>'
            for k, v in rows
        )
        return f"<table><caption>mlxnb OpenAI-compatible server</caption>{body}</table>"


def serve(
    engine: ServedEngine | EngineSource | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    limits: Limits | None = None,
    log_level: str = "warning",
    startup_timeout: float = 10.0,
) -> ServerHandle:
    """Serve ``engine`` as an OpenAI-compatible API from a background thread; returns at once.

    Args:
        engine: An :class:`~mlxnb.Engine` (only it is served) or a :class:`~mlxnb.ModelPool`;
            ``None`` serves the kernel's pool: every model and profile registered in it
            (loaded with :func:`mlxnb.load`, or by :meth:`~mlxnb.ModelPool.register`), each
            loaded on its first request. Nothing else can be asked for over HTTP.
        host: Address to listen on; loopback by default. Another address without ``api_key``
            triggers an :class:`InsecureServerWarning`.
        port: TCP port; ``0`` picks a free one (see ``.port`` / ``.url``).
        api_key: When set, ``/v1`` routes require ``Authorization: Bearer <api_key>``.
        cors_origins: Browser origins allowed to call the API (CORS is off without).
        limits: Request body and ``max_tokens`` limits.
        log_level: uvicorn's log level.
        startup_timeout: Seconds to wait for the server to come up.

    Returns:
        The running server's handle (``.url``, ``.port``, ``.stop()``; a context manager).

    Raises:
        ServerStartError: The port is in use, or start-up did not finish in time.

    Example:
        >>> server = mlxnb.serve(engine)  # doctest: +SKIP
        >>> client = openai.OpenAI(base_url=server.url, api_key="none")  # doctest: +SKIP
    """
    import uvicorn

    warn_if_exposed(host, api_key)
    if engine is None:
        from mlxnb._engine import default_pool

        engine = default_pool()
    app = create_app(engine, api_key=api_key, cors_origins=cors_origins, limits=limits)
    sock = bind_socket(host, port)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    name = f"mlxnb-server-{sock.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    handle = ServerHandle(app, server, thread, sock, host)
    handle.api_key_required = api_key is not None
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            handle.stop(timeout=1.0)
            why = "exited during start-up" if not thread.is_alive() else "did not start in time"
            raise ServerStartError(f"the API server on {host}:{handle.port} {why}")
        time.sleep(0.005)
    return handle
