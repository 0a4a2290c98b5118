"""A remote OpenAI-compatible server as an engine: ``Endpoint`` streams its answers as events.

Each request is one streamed ``POST /v1/chat/completions`` through httpx. At most
``max_concurrency`` requests run at once (per event loop); a 429, a 5xx or a connection error
*before the first byte of the answer* is retried with exponential backoff (a ``Retry-After``
header is honoured), never a half-streamed answer. Other 4xx answers raise mlxnb's errors.
Closing the stream closes the HTTP response, which the server sees as a disconnect (an mlxnb
server cancels the request). Every turn becomes one audit row naming the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from mlxnb._audit import AuditLog
from mlxnb._remote.engine import Messages, RemoteEngine, Tools
from mlxnb._remote.recording import asked, public_url, record_remote_turn
from mlxnb._remote.wire import ChunkReader, error_message, parsed_answer, request_body
from mlxnb.errors import (
    ContextLengthError,
    EngineBusyError,
    InvalidRequestError,
    ModelNotFoundError,
    RemoteError,
)
from mlxnb.events import Done, Event, Turn, TurnBuilder, acollect


def base_url(url: str) -> str:
    """The OpenAI base URL: ``http://host:port`` gains ``/v1``; a given path is kept."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(f"an endpoint needs an http(s) URL, not {url!r}")
    return url if parts.path else f"{url}/v1"


class Endpoint(RemoteEngine):
    """A model served by an OpenAI-compatible server, used like a local engine.

    Prefer :func:`mlxnb.endpoint`. It works wherever an engine does for generation:
    :class:`~mlxnb.Conversation`, :func:`mlxnb.chat`, :func:`mlxnb.evaluate` and the audit
    log. What only a local engine can do (logits processors, raw prompts, thinking budgets,
    scoring choices) is refused with :class:`~mlxnb.errors.InvalidRequestError`.

    Args:
        url: The server's base URL (``http://host:8000/v1``; ``/v1`` is added to a bare host).
        model: The model's name on the server.
        api_key: Sent as ``Authorization: Bearer``; never stored in the audit log or shown.
        max_concurrency: Most requests in flight at once (per event loop).
        retries: Retries of a request that got a 429, a 5xx or a connection error before its
            answer began.
        backoff: Seconds before the first retry; doubled each time (with jitter), at most 30.
        timeout: Seconds to wait for each piece of the answer (and for the connection).
        audit: Where turns are recorded: an :class:`~mlxnb.AuditLog`, ``None`` for the
            default log, ``False`` for none.
        supports_thinking: Whether the model thinks (the chat widget shows its switch).
        kind: ``"vision"`` (the chat widget offers image attachments), ``"text"`` (images are
            refused before sending) or ``None`` (not known: images are sent and the server
            decides).
    """

    def __init__(
        self,
        url: str,
        *,
        model: str,
        api_key: str | None = None,
        max_concurrency: int = 8,
        retries: int = 4,
        backoff: float = 0.25,
        timeout: float = 600.0,
        audit: AuditLog | Literal[False] | None = None,
        supports_thinking: bool = True,
        kind: str | None = None,
    ) -> None:
        if max_concurrency < 1 or retries < 0 or backoff < 0:
            raise InvalidRequestError("max_concurrency must be >= 1; retries, backoff >= 0")
        self.url = base_url(url)
        self.public_url = public_url(self.url)
        self.model_id = model
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._supports_thinking = supports_thinking
        self.kind = kind
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.audit = (AuditLog() if audit is None else audit) or None
        self.in_flight = 0
        self.requests_served = 0
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    # -- what the doors read ---------------------------------------------------------------

    @property
    def supports_thinking(self) -> bool:
        """Whether the model thinks, as given (the server does not say)."""
        return self._supports_thinking

    def __repr__(self) -> str:
        return f"Endpoint({self.public_url!r}, model={self.model_id!r})"

    # -- generation ------------------------------------------------------------------------

    def stream(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: Any = None,
        **options: Any,
    ) -> AsyncGenerator[Event, None]:
        """Generate a reply as an async stream of events, like :meth:`mlxnb.Engine.stream`.

        Args:
            messages: OpenAI-style chat messages.
            tools: OpenAI-style tool definitions offered to the model.
            enable_thinking: Sent as ``chat_template_kwargs.enable_thinking``.
            meta: Who asks, for the audit row (default: source ``python``).
            **options: ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``min_p``,
                ``seed``, ``stop``, penalties, ``logit_bias``, ``tool_choice``,
                ``parallel_tool_calls``, ``json_schema`` / ``response_format``,
                ``chat_template_kwargs``.

        Yields:
            ThinkingDelta, ContentDelta, ToolCallDelta, then ToolCall / ToolCallError, then
            Done (time to first token and tokens/s measured here).

        Raises:
            InvalidRequestError: An option a remote server cannot honour, or a 4xx answer.
            ModelNotFoundError: The server does not serve the model (404).
            EngineBusyError: Still 429 after the retries.
            RemoteError: Unreachable, a 5xx after the retries, a refused key, or the
                connection broke while the answer streamed.
        """
        return self.events(messages, tools, enable_thinking, meta=meta, options=options)

    async def events(
        self,
        messages: Messages,
        tools: Tools,
        enable_thinking: bool | None,
        *,
        meta: Any,
        options: Mapping[str, Any],
        failover: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """:meth:`stream`'s body; ``failover``: a connection error is not retried here."""
        self.in_flight += 1
        started, started_at = time.perf_counter(), datetime.now(timezone.utc)
        builder, body, error = TurnBuilder(), None, None
        reader = ChunkReader(started)
        try:
            body = request_body(self.model_id, messages, tools, enable_thinking, options)
            async with self._slot(), httpx.AsyncClient(timeout=self.timeout) as client:
                response = await self._open(client, body, failover)
                try:
                    async for event in self._read(response, reader):
                        builder.add(event)
                        yield event
                finally:
                    await response.aclose()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.in_flight -= 1
            self.requests_served += 1
            if builder.done is None:
                if error is None or isinstance(error, GeneratorExit | asyncio.CancelledError):
                    builder.add(Done("cancelled", reader.measured()))
                else:
                    builder.add(
                        Done("error", reader.measured(), f"{type(error).__name__}: {error}")
                    )
            record_remote_turn(
                self.audit,
                meta=meta,
                model=self.model_id,
                endpoint=self.public_url,
                body=body,
                request=asked(messages, tools, enable_thinking),
                builder=builder,
                started_at=started_at,
                duration_s=time.perf_counter() - started,
                error=None if isinstance(error, GeneratorExit | asyncio.CancelledError) else error,
            )

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is None:
            slot = self._slots[loop] = asyncio.Semaphore(self.max_concurrency)
        return slot

    async def _open(
        self, client: httpx.AsyncClient, body: dict[str, Any], failover: bool
    ) -> httpx.Response:
        """Send the request; retry 429 / 5xx / connection errors before any answer arrives."""
        url = f"{self.url}/chat/completions"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                request = client.build_request("POST", url, json=body, headers=self._headers)
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                if failover or last:
                    raise RemoteError(
                        f"{self.public_url} could not be reached: {type(exc).__name__}: {exc}",
                        url=self.public_url,
                    ) from exc
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if response.status_code == 200:
                return response
            await response.aread()
            await response.aclose()
            status = response.status_code
            if (status == 429 or status >= 500) and not last:
                await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
                continue
            raise self._refusal(response)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), 30.0)
            except ValueError:
                pass  # an HTTP date: fall back to the backoff
        return float(min(self.backoff * 2**attempt * (0.5 + random.random()), 30.0))

    def _refusal(self, response: httpx.Response) -> Exception:
        """The mlxnb error for a final non-200 answer."""
        status = response.status_code
        try:
            payload: Any = response.json()
        except ValueError:
            payload = response.text
        message = f"{self.public_url} answered {status}: {error_message(payload)}"
        error = payload.get("error") if isinstance(payload, Mapping) else None
        code = error.get("code") if isinstance(error, Mapping) else None
        if status == 429:
            return EngineBusyError(message)
        if status == 404:
            return ModelNotFoundError(message)
        if status in (401, 403) or status >= 500:
            return RemoteError(message, url=self.public_url, status=status)
        if code == "context_length_exceeded":
            return ContextLengthError(message)
        return InvalidRequestError(message)

    async def _read(self, response: httpx.Response, reader: ChunkReader) -> AsyncIterator[Event]:
        """The events of a 200 stream; a broken connection raises ``RemoteError(streamed)``."""
        lines = response.aiter_lines()
        try:
            async for line in lines:
                if not line.startswith("data:"):
                    continue  # blank separators, comments (progress), event names
                data = line[5:].strip()
                if data == "[DONE]":
                    continue  # read on to the end of the body, so httpx's readers finish
                chunk = json.loads(data)
                if isinstance(chunk, Mapping) and chunk.get("error"):
                    for event in reader.finish(error_message(chunk)):
                        yield event
                    return
                for event in reader.feed(chunk):
                    yield event
            else:
                if reader.finish_reason is None:
                    raise RemoteError(
                        f"{self.public_url} ended the answer without finishing it",
                        url=self.public_url,
                        streamed=True,
                    )
        except httpx.TransportError as exc:
            raise RemoteError(
                f"the connection to {self.public_url} broke: {type(exc).__name__}: {exc}",
                url=self.public_url,
                streamed=True,
            ) from exc
        finally:
            await lines.aclose()  # type: ignore[attr-defined]
        for event in reader.finish():
            yield event

    async def agenerate(
        self,
        messages: Messages,
        tools: Tools = None,
        enable_thinking: bool | None = None,
        *,
        meta: Any = None,
        **options: Any,
    ) -> Turn:
        """The whole reply (awaitable twin of :meth:`generate`); arguments as :meth:`stream`."""
        return await self.turn(messages, tools, enable_thinking, meta=meta, options=options)

    async def turn(
        self,
        messages: Messages,
        tools: Tools,
        enable_thinking: bool | None,
        *,
        meta: Any,
        options: Mapping[str, Any],
        failover: bool = False,
    ) -> Turn:
        """:meth:`agenerate`'s body, with the answer parsed as a response format asks."""
        events = self.events(
            messages, tools, enable_thinking, meta=meta, options=options, failover=failover
        )
        turn = await acollect(events)
        shape = options.get("json_schema") or options.get("response_format")
        if shape is not None:
            turn = replace(turn, parsed=parsed_answer(shape, turn.content))
        return turn
