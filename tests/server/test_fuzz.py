"""Property-based fuzzing of the published OpenAPI schema: whatever arrives, never a 5xx.

Schemathesis draws requests from the app's own OpenAPI document, both schema-conforming ones
(which run real generations) and deliberately broken ones; every answer must be below 500 and
every error must have OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mlxnb._server import Limits
from mlxnb._server.background import ServerHandle, serve

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 30  # per operation and mode: keeps the run short on two CPU cores
# Negative cases exist only where there is input to break: the request bodies.
CASES = [
    ("POST", "/v1/chat/completions", "positive"),
    ("POST", "/v1/chat/completions", "negative"),
    ("POST", "/v1/completions", "positive"),
    ("POST", "/v1/completions", "negative"),
    ("POST", "/v1/messages", "positive"),
    ("POST", "/v1/messages", "negative"),
    ("POST", "/v1/responses", "positive"),
    ("POST", "/v1/responses", "negative"),
    ("GET", "/v1/models/{model}", "positive"),
    ("GET", "/v1/models", "positive"),
    ("GET", "/health", "positive"),
]


@pytest.fixture(scope="module")
def fuzz_server(scripted: Any) -> Iterator[ServerHandle]:
    with serve(scripted, limits=Limits(max_body_bytes=64 * 1024, max_tokens=24)) as handle:
        yield handle


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerHandle) -> Any:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{fuzz_server.port}/openapi.json")


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[" ".join(c) for c in CASES])
def test_no_input_makes_the_server_fail(
    api_schema: Any,
    fuzz_server: ServerHandle,
    model_id: str,
    method: str,
    path: str,
    mode: str,
    request: pytest.FixtureRequest,
) -> None:
    if path == "/v1/completions" and mode == "positive":
        request.getfixturevalue("needs_raw_prompts")
    operation = api_schema[path][method]
    generation_mode = schemathesis.GenerationMode(mode)
    base = f"http://127.0.0.1:{fuzz_server.port}"
    with httpx.Client(base_url=base, timeout=60) as http:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # report the failing input as found
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=operation.as_strategy(generation_mode=generation_mode), real_model=st.booleans()
        )
        def check(case: Any, real_model: bool) -> None:
            body = case.body
            if real_model and isinstance(body, dict) and "model" in body:
                body = {**body, "model": model_id}  # reach the engine, not just the 404
            kwargs = case.as_transport_kwargs(base_url=base)
            kwargs.pop("json", None)
            kwargs.pop("data", None)
            if isinstance(body, bytes | str):
                kwargs["content"] = body
            elif body is not None and not isinstance(body, schemathesis.core.NotSet):
                kwargs["json"] = body
            response = http.request(
                kwargs.pop("method"),
                kwargs.pop("url"),
                headers=kwargs.get("headers"),
                params=kwargs.get("params"),
                content=kwargs.get("content"),
                json=kwargs.get("json"),
            )
            assert response.status_code < 500, (case.body, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"]

        check()
    # And it still answers properly afterwards.
    assert httpx.get(f"{base}/v1/models").status_code == 200
