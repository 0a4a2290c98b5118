"""Fixtures for the HTTP API tests: a real engine on the tiny model, served by real uvicorn.

Logits processors cannot travel over HTTP, so :class:`Scripted` wraps the real engine and adds
them server-side, chosen by the last message of each request:

- user ``"say:TEXT"`` → the model emits exactly ``TEXT`` (then end of sequence; after a final
  assistant message, a prefill, the user message before it says what comes next);
- a ``tool`` message → the model answers ``"Result: <tool content>"``;
- user ``"spin:..."`` → free generation that may never end (EOS banned), counting its steps;
- user ``"boom:..."`` → the logits processor raises inside generation after a few steps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

import mlxnb
from mlxnb._server import Limits
from mlxnb._server.background import ServerHandle, serve
from mlxnb.events import Event
from mlxnb.testing import forced_output, tiny_model

API_KEY = "test-key-123"


class Spinner:
    """Bans end-of-sequence and counts the steps it was called (on the worker thread)."""

    def __init__(self, eos: Sequence[int]) -> None:
        self.eos = list(eos)
        self.steps = 0
        self.lock = threading.Lock()

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        with self.lock:
            self.steps += 1
        banned = mx.zeros(logits.shape[-1], dtype=mx.bool_)
        banned[mx.array(self.eos)] = True
        return mx.where(banned, mx.array(-float("inf"), dtype=logits.dtype), logits)


class Boom:
    """Raises inside generation after ``after`` steps."""

    def __init__(self, after: int = 4) -> None:
        self.after = after
        self.steps = 0

    def __call__(self, tokens: Any, logits: Any) -> Any:
        self.steps += 1
        if self.steps > self.after:
            raise RuntimeError("boom: injected failure")
        return logits


class Scripted:
    """The real engine, with test logits processors chosen from each request's last message."""

    def __init__(self, engine: mlxnb.Engine) -> None:
        self.engine = engine
        self.spinners: list[Spinner] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def _processor(self, last: Mapping[str, Any]) -> Any:
        content = last.get("content") or ""
        if not isinstance(content, str):  # a token-id prompt: never scripted
            return None
        tokenizer = self.engine.tokenizer
        if last.get("role") == "tool":
            return forced_output(tokenizer, f"Result: {content}")
        if content.startswith("say:"):
            return forced_output(tokenizer, content.removeprefix("say:"))
        if content.startswith("think:"):  # opens a thinking block the random model never closes
            return forced_output(tokenizer, "<think>\n", then="free")
        if content.startswith("spin:"):
            spinner = Spinner(sorted(tokenizer.eos_token_ids))
            self.spinners.append(spinner)
            return spinner
        if content.startswith("boom:"):
            return [forced_output(tokenizer, content.removeprefix("boom:"), then="free"), Boom()]
        return None

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Any = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        # A final assistant message (a prefill) is carried on: the script is the message before.
        asked = [m for m in messages if m.get("role") != "assistant"]
        last = asked[-1] if asked else {"role": "user", "content": options.get("prompt")}
        processor = self._processor(last)
        if processor is not None:
            added = processor if isinstance(processor, list) else [processor]
            options["logits_processors"] = [*options.get("logits_processors", ()), *added]
        return self.engine.stream(messages, tools, enable_thinking, **options)


@pytest.fixture(scope="session")
def engine() -> Iterator[mlxnb.Engine]:
    # max_tokens=16 keeps requests that do not say (fuzzing) short.
    with (
        mlxnb.AuditLog(":memory:") as audit,
        mlxnb.load(tiny_model(), audit=audit, max_tokens=16) as engine,
    ):
        yield engine


@pytest.fixture(scope="session")
def raw_prompts(engine: mlxnb.Engine) -> bool:
    """Whether the engine takes a raw ``prompt=`` (text completions need it)."""
    try:
        engine.generate([], prompt="hello", max_tokens=1)
    except TypeError:
        return False
    return True


@pytest.fixture
def needs_raw_prompts(request: pytest.FixtureRequest, raw_prompts: bool) -> None:
    if not raw_prompts:
        request.applymarker(
            pytest.mark.xfail(
                reason="engine.stream(prompt=...) is not implemented yet", strict=True
            )
        )


@pytest.fixture(scope="session")
def scripted_type() -> type[Scripted]:
    return Scripted


@pytest.fixture(scope="session")
def scripted(engine: mlxnb.Engine) -> Scripted:
    return Scripted(engine)


@pytest.fixture(scope="session")
def server(scripted: Scripted) -> Iterator[ServerHandle]:
    limits = Limits(max_body_bytes=256 * 1024, max_tokens=4096)
    with serve(scripted, limits=limits) as handle:
        yield handle


@pytest.fixture(scope="session")
def keyed_server(scripted: Scripted) -> Iterator[ServerHandle]:
    with serve(scripted, api_key=API_KEY) as handle:
        yield handle


@pytest.fixture(scope="session")
def model_id(engine: mlxnb.Engine) -> str:
    return engine.model_id


@pytest.fixture
def client(server: ServerHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="function")  # closed on the loop its connections use
async def aclient(server: ServerHandle) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=server.url, api_key="unused", max_retries=0, timeout=60
    ) as client:
        yield client


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as client:
        yield client


ChatBody = Any


@pytest.fixture
def chat_body(model_id: str) -> ChatBody:
    """Build a minimal chat request body: ``chat_body("say:Hi", max_tokens=8)``."""

    def build(content: str, **extra: Any) -> dict[str, Any]:
        return {"model": model_id, "messages": [{"role": "user", "content": content}], **extra}

    return build


@pytest.fixture
def wait_until() -> Any:
    """Wait (bounded) for a condition that the server reaches asynchronously."""

    def wait(predicate: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {timeout} s")
            time.sleep(0.01)

    return wait
