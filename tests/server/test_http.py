"""Raw HTTP: bad input gets the right OpenAI-shaped 4xx and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

import mlxnb
from mlxnb._server.background import ServerHandle, serve
from mlxnb.testing import tiny_model

MSG = [{"role": "user", "content": "hi"}]
MODEL = "{model}"  # replaced by the served model id
API_KEY = "test-key-123"  # as the keyed_server fixture


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MSG, **fields}


BAD_REQUESTS = {
    "malformed json": ("{not json", 400, "invalid_json", None),
    "empty body": ("", 400, "invalid_json", None),
    "json array": ([], 400, "invalid_json", None),
    "no messages field": ({"model": MODEL}, 422, "invalid_value", "messages"),
    "empty messages": (body(messages=[]), 422, "invalid_value", "messages"),
    "message without role": (body(messages=[{"content": "x"}]), 422, "invalid_value", None),
    "unknown role": (body(messages=[{"role": "wizard", "content": "x"}]), 422, None, None),
    "temperature wrong type": (body(temperature="hot"), 422, "invalid_value", "temperature"),
    "temperature out of range": (body(temperature=5), 422, "invalid_value", "temperature"),
    "max_tokens zero": (body(max_tokens=0), 422, "invalid_value", "max_tokens"),
    "max_tokens over server limit": (body(max_tokens=4097), 422, "invalid_value", "max_tokens"),
    "n above sixteen": (body(n=17), 422, "invalid_value", "n"),
    "too many stop strings": (body(stop=[f"s{i}" for i in range(17)]), 422, None, "stop"),
    "empty stop string": (body(stop=""), 422, None, None),
    "too many tools": (
        body(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]),
        422,
        None,
        "tools",
    ),
    "bad tool name": (
        body(tools=[{"type": "function", "function": {"name": "no spaces allowed"}}]),
        422,
        None,
        None,
    ),
    "image content part": (
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        422,
        None,
        None,
    ),
    "top_logprobs over 20": (body(logprobs=True, top_logprobs=21), 422, None, "top_logprobs"),
    "unknown model": (body(model="no-such-model"), 404, "model_not_found", None),
    "tool-call arguments not json": (
        body(
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{not json"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "x"},
            ]
        ),
        400,
        "invalid_request",
        None,
    ),
    "invalid json schema": (
        body(response_format={"type": "json_schema", "json_schema": {"schema": {"type": 12}}}),
        400,
        "invalid_request",
        None,
    ),
    "body too large": (
        body(messages=[{"role": "user", "content": "x" * 300_000}]),
        413,
        "request_too_large",
        None,
    ),
}


def encode(payload: Any, model: str) -> bytes:
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload).replace(MODEL, model).encode()


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture
def still_serves(http: httpx.Client, chat_body: Any) -> Iterator[None]:
    yield
    response = http.post("/v1/chat/completions", json=chat_body("say:still here"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "still here"


@pytest.mark.usefixtures("still_serves")
@pytest.mark.parametrize(
    ("payload", "status", "code", "param"), list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS)
)
def test_bad_request_gets_an_openai_error(
    http: httpx.Client,
    model_id: str,
    payload: Any,
    status: int,
    code: str | None,
    param: str | None,
) -> None:
    response = http.post(
        "/v1/chat/completions",
        content=encode(payload, model_id),
        headers={"content-type": "application/json"},
    )
    error = assert_openai_error(response, status, code)
    if param is not None:
        assert error["param"] == param
    if status == 404:
        assert model_id in error["message"]  # lists what is available


@pytest.mark.usefixtures("still_serves")
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/chat/completions", 405),
        ("GET", "/v1/nothing-here", 404),
        ("GET", "/v1/models/no-such-model", 404),
    ],
)
def test_wrong_route_or_method(http: httpx.Client, method: str, path: str, status: int) -> None:
    assert_openai_error(http.request(method, path), status)


def test_health(http: httpx.Client, model_id: str) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["models"] == [model_id]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-key"}, 401),
        ({"Authorization": "KEY"}, 401),
        ({"Authorization": "Bearer KEY"}, 200),
        ({"Authorization": "bearer KEY"}, 200),
    ],
)
def test_api_key_guards_every_v1_route(
    keyed_server: ServerHandle, model_id: str, headers: dict[str, str], status: int
) -> None:
    headers = {k: v.replace("KEY", API_KEY) for k, v in headers.items()}
    base = f"http://127.0.0.1:{keyed_server.port}"
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        responses = [
            http.get("/v1/models"),
            http.post(
                "/v1/chat/completions",
                json={"model": model_id, "messages": [{"role": "user", "content": "say:k"}]},
            ),
            http.post("/v1/chat/completions", content=b"{not json"),  # auth comes first
        ]
        assert http.get("/health").status_code == 200  # no key needed outside /v1
    if status == 401:
        for response in responses:
            assert_openai_error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert [r.status_code for r in responses] == [200, 200, 400]


def test_openai_client_with_and_without_the_key(keyed_server: ServerHandle, model_id: str) -> None:
    good = openai.OpenAI(base_url=keyed_server.url, api_key=API_KEY, max_retries=0)
    assert [m.id for m in good.models.list()] == [model_id]
    bad = openai.OpenAI(base_url=keyed_server.url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


@pytest.mark.parametrize("origins", [None, ["http://app.example"]])
def test_cors_is_off_unless_origins_are_given(scripted: Any, origins: list[str] | None) -> None:
    with serve(scripted, cors_origins=origins) as server:
        preflight = httpx.options(
            f"{server.url}/chat/completions",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
    allowed = preflight.headers.get("access-control-allow-origin")
    assert allowed == ("http://app.example" if origins else None)


@pytest.mark.usefixtures("still_serves")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_failure_inside_generation_ends_only_that_request(
    http: httpx.Client, chat_body: Any, stream: bool
) -> None:
    response = http.post(
        "/v1/chat/completions", json=chat_body("boom:One two three four five six", stream=stream)
    )
    if not stream:
        error = assert_openai_error(response, 500)
        assert "boom" in error["message"]
        return
    assert response.status_code == 200
    events = [
        line.removeprefix("data: ")
        for line in response.text.splitlines()
        if line and not line.startswith(":")
    ]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "boom" in error["message"]
    assert all("error" not in json.loads(e) for e in events[:-2])


@pytest.fixture(scope="module")
def busy_engine() -> Iterator[mlxnb.Engine]:
    engine = mlxnb.load(tiny_model(), audit=False, max_pending=1, max_tokens=4000)
    yield engine
    engine.close()


def test_full_queue_gets_429_not_a_wait(
    busy_engine: mlxnb.Engine, wait_until: Any, scripted_type: Any
) -> None:
    with serve(scripted_type(busy_engine)) as server, httpx.Client(timeout=60) as http:
        url = f"{server.url}/chat/completions"
        body = {
            "model": busy_engine.model_id,
            "stream": True,
            "messages": [{"role": "user", "content": "spin:"}],
        }
        with http.stream("POST", url, json=body) as spinning:
            # Keep the line iterator: dropping it closes the stream, and the server would
            # cancel the spinning request (a race the refusal below could lose).
            lines = spinning.iter_lines()
            first = next(lines)
            assert spinning.status_code == 200 and first.startswith("data: "), first[:300]
            refused = http.post(url, json={**body, "stream": False, "max_tokens": 1})
            assert_openai_error(refused, 429, "engine_busy")
            assert refused.headers["retry-after"] == "1"
        wait_until(lambda: busy_engine.pending == 0)
        body["messages"] = [{"role": "user", "content": "say:served"}]
        served = http.post(url, json={**body, "stream": False})
        assert served.json()["choices"][0]["message"]["content"] == "served"


def test_closed_engine_gets_503() -> None:
    engine = mlxnb.load(tiny_model(), audit=False)
    engine.close()
    with serve(engine) as server:
        response = httpx.post(
            f"{server.url}/chat/completions", json={"model": engine.model_id, "messages": MSG}
        )
        assert_openai_error(response, 503, "engine_closed")
        assert httpx.get(server.url.removesuffix("/v1") + "/health").json()["status"] == "closed"
