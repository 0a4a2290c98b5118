"""ASGI middleware: the API key on ``/v1`` routes and a bounded request body."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from mlxnb._server.anthropic import for_path
from mlxnb._server.errors import ApiError


class Guard:
    """ASGI middleware: the API key on ``/v1`` routes and a bounded request body.

    The key is taken as ``Authorization: Bearer KEY`` (OpenAI's clients) or ``x-api-key: KEY``
    (Anthropic's). The body is read here once (413 past the limit) and replayed to the app, so
    nothing downstream ever holds more than the limit. Errors on ``/v1/messages`` are
    Anthropic-shaped, like the rest of that route's.

    Args:
        app: The wrapped ASGI app.
        api_key: Required API key on ``/v1`` routes, or ``None``.
        max_body_bytes: Largest accepted body.
    """

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self._expected = api_key.encode() if api_key else None
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        guarded = path == "/v1" or path.startswith("/v1/")
        if self._expected is not None and guarded and not self._authorized(scope):
            error = ApiError(
                401,
                "missing or wrong API key (Authorization: Bearer … or x-api-key: …)",
                "authentication_error",
                "invalid_api_key",
            )
            response = for_path(path, error).response()
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self._expected is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(token, self._expected):
                    return True
            elif name == b"x-api-key" and hmac.compare_digest(value, self._expected):
                return True
        return False

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        too_big = for_path(
            scope["path"],
            ApiError(
                413,
                f"request body larger than {self._max} bytes",
                "invalid_request_error",
                "request_too_large",
            ),
        )
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self._max:
                await too_big.response()(scope, receive, send)
                return None
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                await too_big.response()(scope, receive, send)
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
