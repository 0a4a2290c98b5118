"""API errors: OpenAI-shaped error bodies and the one mapping from exceptions to HTTP status.

| raised                 | status | type                    | code              |
| ---------------------- | ------ | ----------------------- | ----------------- |
| ContextLengthError     | 400    | invalid_request_error   | context_length_exceeded |
| KvBudgetError          | 400    | invalid_request_error   | kv_budget_exceeded |
| InvalidRequestError    | 400    | invalid_request_error   | invalid_request   |
| (schema validation)    | 422    | invalid_request_error   | invalid_value     |
| (unknown model)        | 404    | invalid_request_error   | model_not_found   |
| EngineBusyError        | 429    | rate_limit_error        | engine_busy (with Retry-After) |
| DistributedError       | 503    | server_error            | distributed_group_failed |
| EngineClosedError      | 503    | server_error            | engine_closed     |
| other MlxnbError       | 500    | server_error            | the class name    |
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mlxnb.errors import (
    ContextLengthError,
    DistributedError,
    EngineBusyError,
    EngineClosedError,
    InvalidRequestError,
    KvBudgetError,
    MlxnbError,
)

log = logging.getLogger("mlxnb.server")


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> Any:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    """The ``error`` member of an error response."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """An OpenAI-shaped error response."""

    error: ErrorDetail


class ApiError(Exception):
    """An error with its HTTP status and OpenAI error type and code."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.param = param

    def response(self) -> JSONResponse:
        """The OpenAI-shaped JSON response."""
        headers = {"Retry-After": "1"} if self.status == 429 else None
        body = error_body(self.message, self.type, self.code, self.param)
        return JSONResponse(body, status_code=self.status, headers=headers)


def api_error(error: BaseException) -> ApiError:
    """Map an exception raised while starting a generation onto an :class:`ApiError`."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, ContextLengthError):
        return ApiError(
            400, str(error), "invalid_request_error", "context_length_exceeded", "messages"
        )
    if isinstance(error, KvBudgetError):
        return ApiError(
            400, str(error), "invalid_request_error", "kv_budget_exceeded", "max_tokens"
        )
    if isinstance(error, InvalidRequestError):
        return ApiError(400, str(error), "invalid_request_error", "invalid_request")
    if isinstance(error, EngineBusyError):
        return ApiError(429, str(error), "rate_limit_error", "engine_busy")
    if isinstance(error, DistributedError):
        return ApiError(503, str(error), "server_error", "distributed_group_failed")
    if isinstance(error, EngineClosedError):
        return ApiError(503, str(error), "server_error", "engine_closed")
    if isinstance(error, MlxnbError):
        return ApiError(500, str(error), "server_error", type(error).__name__)
    log.exception("mlxnb: unexpected error", exc_info=error)
    return ApiError(500, f"internal error: {type(error).__name__}", "server_error", None)


def validation_error(errors: Any) -> ApiError:
    """Turn pydantic's validation errors into one readable 400 (no JSON body) or 422."""
    errors = list(errors)
    if any(e.get("type") == "json_invalid" or tuple(e.get("loc", ())) == ("body",) for e in errors):
        return ApiError(
            400, "the request body must be a JSON object", "invalid_request_error", "invalid_json"
        )
    places = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in errors]
    parts = [
        f"{where}: {e.get('msg', 'invalid')}"
        for where, e in zip(places[:5], errors[:5], strict=True)
    ]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    message = "; ".join(parts) + more
    return ApiError(422, message, "invalid_request_error", "invalid_value", places[0] or None)
