"""Fixtures for remote endpoints: a real engine on the tiny model served on loopback.

Logits processors cannot travel over HTTP, so :class:`Scripted` adds them on the server's
side, chosen by the last message of each request:

- user ``"say:TEXT"`` → the model emits exactly ``TEXT`` (markers such as ``<think>`` and
  ``<tool_call>`` included), then end of sequence;
- a ``tool`` message → the model answers ``"Result: <tool content>"``;
- user ``"spin:..."`` → free generation with end-of-sequence banned (it runs until stopped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest
from remote_scripts import API_KEY

import mlxnb
from mlxnb._server.background import ServerHandle, serve
from mlxnb.events import Event
from mlxnb.testing import forced_output, tiny_model


class NoEnd:
    """Bans end-of-sequence, so generation runs until it is cancelled (or max_tokens)."""

    def __init__(self, eos: Sequence[int]) -> None:
        self.eos = list(eos)

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        banned = mx.zeros(logits.shape[-1], dtype=mx.bool_)
        banned[mx.array(self.eos)] = True
        return mx.where(banned, mx.array(-float("inf"), dtype=logits.dtype), logits)


class Scripted:
    """The real engine, with forced output chosen from each request's last message."""

    def __init__(self, engine: mlxnb.Engine) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def _processor(self, last: Mapping[str, Any]) -> Any:
        content = last.get("content") or ""
        tokenizer = self.engine.tokenizer
        if last.get("role") == "tool":
            return forced_output(tokenizer, f"Result: {content}")
        if content.startswith("say:"):
            return forced_output(tokenizer, content.removeprefix("say:"))
        if content.startswith("spin:"):
            return NoEnd(sorted(tokenizer.eos_token_ids))
        return None

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Any = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        processor = self._processor(messages[-1])
        if processor is not None:
            options["logits_processors"] = [processor]
        return self.engine.stream(messages, tools, enable_thinking, **options)


@pytest.fixture(scope="session")
def server_audit() -> Iterator[mlxnb.AuditLog]:
    """The serving engine's own audit log (what the server side saw)."""
    with mlxnb.AuditLog(":memory:") as audit:
        yield audit


@pytest.fixture(scope="session")
def served_engine(server_audit: mlxnb.AuditLog) -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_model(), audit=server_audit, max_tokens=16) as engine:
        yield engine


@pytest.fixture(scope="session")
def server(served_engine: mlxnb.Engine) -> Iterator[ServerHandle]:
    """The scripted engine behind a real uvicorn on loopback, with an API key."""
    with serve(Scripted(served_engine), port=0, api_key=API_KEY) as handle:
        yield handle


@pytest.fixture
def client_audit() -> Iterator[mlxnb.AuditLog]:
    """The calling side's audit log."""
    with mlxnb.AuditLog(":memory:") as audit:
        yield audit


@pytest.fixture
def remote(
    server: ServerHandle, served_engine: mlxnb.Engine, client_audit: mlxnb.AuditLog
) -> mlxnb.Endpoint:
    """An endpoint on the in-process server, recording into ``client_audit``."""
    return mlxnb.endpoint(
        server.url, model=served_engine.model_id, api_key=API_KEY, audit=client_audit
    )
