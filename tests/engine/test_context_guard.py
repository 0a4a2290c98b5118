"""A request that cannot fit the model's context is refused before any forward pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import mlxnb
from mlxnb._server.background import serve
from mlxnb.errors import ContextLengthError

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def forward_passes(engine: mlxnb.Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts calls of the engine's model (prefill chunks and decode steps alike)."""
    model = engine._worker.backend.model  # type: ignore[union-attr]
    original = type(model).__call__
    calls = [0]

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "__call__", counting)
    yield calls


def test_the_context_length_comes_from_the_config(engine: mlxnb.Engine) -> None:
    assert engine._worker.backend.context_length == 32768  # type: ignore[union-attr]


def test_an_over_long_request_is_refused_with_no_forward_pass(
    engine: mlxnb.Engine, forward_passes: list[int]
) -> None:
    with pytest.raises(ContextLengthError) as refused:
        engine.generate(HI, max_tokens=32_768)
    assert forward_passes[0] == 0
    message = str(refused.value)
    assert "max_tokens is 32768" in message and "context of 32768 tokens" in message
    # The engine keeps serving, and a request that fits runs.
    assert engine.generate(HI, max_tokens=3).usage.completion_tokens == 3
    assert forward_passes[0] > 0


def test_a_long_prompt_is_refused_the_same_way(
    engine: mlxnb.Engine, forward_passes: list[int]
) -> None:
    long_prompt = [{"role": "user", "content": "word " * 33_000}]
    with pytest.raises(ContextLengthError, match=r"the prompt has \d{5} tokens"):
        engine.generate(long_prompt, max_tokens=8)
    assert forward_passes[0] == 0


def test_the_refusal_is_audited(engine: mlxnb.Engine) -> None:
    with pytest.raises(ContextLengthError):
        engine.generate(HI, max_tokens=40_000)
    row = engine.audit.df.iloc[-1]  # type: ignore[union-attr]
    assert (row["status"], row["error_type"]) == ("error", "ContextLengthError")


def test_over_http_it_is_a_400_named_context_length_exceeded(engine: mlxnb.Engine) -> None:
    with serve(engine) as server:
        body = {"model": engine.model_id, "messages": HI, "max_tokens": 32_768}
        response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and "32768" in error["message"]
        body["max_tokens"] = 2
        assert httpx.post(f"{server.url}/chat/completions", json=body, timeout=60).is_success
