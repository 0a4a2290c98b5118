"""A fake engine at the ``stream`` seam: scripted events instead of a model.

Code that consumes :meth:`mlxnb.Engine.stream` (a chat front end, an agent loop, an
evaluation harness) can be tested against :class:`FakeEngine` without loading any model, the
way ``httpx.MockTransport`` stands in for the network. Each request consumes the next scripted
reply; every request is recorded as a :class:`FakeCall`. Requests are checked as the real
engine checks them (messages, sampling options), so a malformed request fails here too.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlxnb._engine.request import RequestMeta, sampling_options
from mlxnb._engine.response_format import requested_format, with_parsed
from mlxnb._messages import normalize_messages
from mlxnb.errors import EngineClosedError
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    FinishReason,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Turn,
    Usage,
    acollect,
    collect,
)

Step = Event | BaseException
"""One step of a scripted reply: an event to yield, or an exception to raise at that point."""

Outcome = Literal["streaming", "finished", "cancelled", "raised"]
"""How a recorded request ended (``streaming`` while it is still being consumed)."""

_DEFAULT_REPLY: tuple[Step, ...] = (ContentDelta("ok"), Done("stop", Usage(completion_tokens=1)))


@dataclass
class FakeCall:
    """One request a :class:`FakeEngine` received, and how it ended.

    Attributes:
        messages: The chat messages, as passed.
        tools: The tool definitions, as passed (``None`` for none).
        enable_thinking: The thinking switch, as passed.
        meta: Who asked (a default ``RequestMeta`` when the caller gave none).
        prompt: The raw completion prompt, if any.
        json_schema: The schema the answer was asked to match, if any.
        chat_template_kwargs: Further chat-template arguments, if any.
        sampling: The sampling options, as passed (``max_tokens``, ``temperature``...).
        tool_choice: The tool choice, as passed (recorded, not enforced).
        parallel_tool_calls: Whether several tool calls were allowed, as passed.
        events: The events handed to the consumer so far.
        outcome: ``finished`` once the ``Done`` event was consumed, ``cancelled`` when the
            consumer closed the stream before that (``break``, ``aclose()``, a cancelled task),
            ``raised`` when the script raised an exception, ``streaming`` meanwhile.
    """

    messages: list[Mapping[str, Any]]
    tools: list[Mapping[str, Any]] | None
    enable_thinking: bool | None
    meta: RequestMeta
    prompt: str | None
    json_schema: Mapping[str, Any] | None
    chat_template_kwargs: Mapping[str, Any] | None
    sampling: dict[str, Any]
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool = True
    events: list[Event] = field(default_factory=list)
    outcome: Outcome = "streaming"

    @property
    def cancelled(self) -> bool:
        """Whether the consumer closed the stream before its ``Done`` event."""
        return self.outcome == "cancelled"


def fake_reply(
    content: str = "",
    *,
    reasoning: str = "",
    tool_calls: Iterable[tuple[str, Mapping[str, Any]]] = (),
    finish_reason: FinishReason | None = None,
    error: str | None = None,
    prompt_tokens: int = 0,
) -> list[Event]:
    """Build the events a real engine streams for one reply, ending with :class:`Done`.

    Texts stream word by word (whitespace kept), reasoning first, then content, then each tool
    call as raw :class:`ToolCallDelta` text followed by the parsed :class:`ToolCall`.

    Args:
        content: The visible answer.
        reasoning: The thinking text.
        tool_calls: ``(name, arguments)`` pairs, in order.
        finish_reason: Defaults to ``tool_calls`` when there are calls, else ``stop``.
        error: The ``Done`` event's error message (with ``finish_reason="error"``).
        prompt_tokens: Reported in the ``Done`` event's usage.

    Returns:
        The events, to pass to :class:`FakeEngine` or :meth:`FakeEngine.enqueue`.
    """
    events: list[Event] = [ThinkingDelta(piece) for piece in _pieces(reasoning)]
    events += [ContentDelta(piece) for piece in _pieces(content)]
    calls = list(tool_calls)
    for index, (name, arguments) in enumerate(calls):
        raw = json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)
        events.append(ToolCallDelta(index, raw))
        events.append(ToolCall(index, f"call_fake{index}", name, dict(arguments)))
    reason: FinishReason = finish_reason or ("tool_calls" if calls else "stop")
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(events))
    return [*events, Done(reason, usage, error)]


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*|\s+", text)


class FakeEngine:
    """An :class:`mlxnb.Engine` stand-in that streams scripted replies.

    It has the engine's request surface (``stream``, ``stream_sync``, ``generate``,
    ``agenerate``), readiness (``ready``, ``wait_ready``, ``await_ready``) and lifetime
    (``close``, ``closed``, a context manager). Each request consumes the next scripted reply
    in order; when none is left it streams ``default``. A reply is a sequence of events ending
    with a :class:`~mlxnb.events.Done` event; an exception in it is raised when the consumer
    reaches it (at the start: a refused request; later: a failure mid-stream). Closing the
    stream early is recorded as a cancellation, as the real engine cancels generation.

    Example::

        engine = FakeEngine([fake_reply("Paris.", reasoning="Capital of France.")])
        turn = await engine.agenerate([{"role": "user", "content": "Capital of France?"}])
        assert turn.content == "Paris." and engine.calls[0].outcome == "finished"

    Args:
        replies: Scripted replies, consumed one per request.
        model_id: The ``model_id`` to report.
        default: The reply once the script runs out; ``None`` raises ``AssertionError``.
        delay: Seconds to wait before each step (a slow model).
        ready: Whether loading has finished; else call :meth:`finish_loading`.
        load_error: Raised by :meth:`wait_ready` and every request once loaded, as a real
            engine raises its load error.
        supports_thinking: Reported as ``supports_thinking``.
        supports_tools: Reported as ``supports_tools``.

    Attributes:
        calls: Every request received, in order.
    """

    def __init__(
        self,
        replies: Iterable[Sequence[Step]] = (),
        *,
        model_id: str = "fake/model",
        default: Sequence[Step] | None = _DEFAULT_REPLY,
        delay: float = 0.0,
        ready: bool = True,
        load_error: BaseException | None = None,
        supports_thinking: bool = True,
        supports_tools: bool = True,
    ) -> None:
        self.model_id = model_id
        self.calls: list[FakeCall] = []
        self._replies: list[tuple[Step, ...]] = []
        self._default = None if default is None else _checked(default)
        self._delay = delay
        self._load_error = load_error
        self._loaded = threading.Event()
        self._supports_thinking = supports_thinking
        self._supports_tools = supports_tools
        self._closed = False
        self._pending = 0
        for reply in replies:
            self.enqueue(reply)
        if ready:
            self._loaded.set()

    # -- scripting -------------------------------------------------------------------------

    def enqueue(self, reply: Sequence[Step]) -> None:
        """Script the reply to a later request (after those already scripted).

        Raises:
            ValueError: The reply neither ends with a ``Done`` event nor raises, or has steps
                after its ``Done`` event.
        """
        self._replies.append(_checked(reply))

    @property
    def remaining(self) -> int:
        """Scripted replies not consumed yet."""
        return len(self._replies)

    def finish_loading(self, error: BaseException | None = None) -> None:
        """End loading, successfully or with ``error`` (raised as a real load error is)."""
        if error is not None:
            self._load_error = error
        self._loaded.set()

    # -- readiness -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether loading has finished (successfully or not)."""
        return self._loaded.is_set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until loaded, then raise the load error if there is one.

        Raises:
            TimeoutError: ``timeout`` passed first.
        """
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"{self.model_id} did not load within {timeout} s")
        if self._load_error is not None:
            raise self._load_error

    async def await_ready(self) -> None:
        """Like :meth:`wait_ready`, without blocking the event loop."""
        while not self._loaded.is_set():
            await asyncio.sleep(0.01)
        self.wait_ready(0)

    @property
    def supports_thinking(self) -> bool:
        """Whether the fake model claims thinking markers."""
        return self._supports_thinking

    @property
    def supports_tools(self) -> bool:
        """Whether the fake model claims a tool-call format."""
        return self._supports_tools

    @property
    def pending(self) -> int:
        """Requests being streamed now."""
        return self._pending

    # -- requests --------------------------------------------------------------------------

    def _start(self, call: FakeCall) -> tuple[Step, ...]:
        self.calls.append(call)
        try:
            if call.prompt is None:
                normalize_messages(call.messages)
            sampling_options({}, call.sampling)
            if self._closed:
                raise EngineClosedError(f"the engine for {self.model_id} is closed")
            if self._replies:
                return self._replies.pop(0)
            if self._default is None:
                raise AssertionError(f"FakeEngine got request {len(self.calls)} with no reply left")
            return self._default
        except BaseException:
            call.outcome = "raised"
            raise

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        *,
        meta: RequestMeta | None = None,
        prompt: str | None = None,
        json_schema: Mapping[str, Any] | type | None = None,
        response_format: Any = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = True,
        prefill_progress: bool = False,
        **sampling: Any,
    ) -> AsyncIterator[Event]:
        """Stream the next scripted reply, as :meth:`mlxnb.Engine.stream` streams a turn.

        Closing the generator before its ``Done`` event records the call as cancelled.

        Args:
            messages: OpenAI-style chat messages.
            tools: Tool definitions offered to the model.
            enable_thinking: The thinking switch.
            meta: Who asks (default: source ``python``).
            prompt: Raw text completion (``messages`` ignored).
            json_schema: The schema the answer should match (recorded, not enforced).
            response_format: The same as a pydantic model or a schema (recorded as its schema;
                :meth:`generate` parses the answer as the real engine does).
            chat_template_kwargs: Further chat-template arguments.
            tool_choice: ``auto``, ``none``, ``required`` or a named function (recorded).
            parallel_tool_calls: Whether several calls are allowed (recorded).
            prefill_progress: Accepted; a fake has no prefill to report.
            **sampling: Sampling options, checked as the real engine checks them.

        Yields:
            The scripted events, ending with ``Done``.

        Raises:
            EngineClosedError: The engine was closed.
            InvalidRequestError: The request is malformed (as the real engine would say).
            AssertionError: No scripted reply is left and there is no default.
        """
        call = _call(
            messages,
            tools,
            enable_thinking,
            meta=meta,
            prompt=prompt,
            json_schema=_schema(json_schema, response_format),
            chat_template_kwargs=chat_template_kwargs,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            **sampling,
        )
        await self.await_ready()
        reply = self._start(call)
        self._pending += 1
        try:
            for step in reply:
                await asyncio.sleep(self._delay)
                for event in _advance(call, step):
                    yield event
        finally:
            self._pending -= 1
            _settle(call)

    def stream_sync(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        *,
        meta: RequestMeta | None = None,
        prompt: str | None = None,
        json_schema: Mapping[str, Any] | type | None = None,
        response_format: Any = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = True,
        prefill_progress: bool = False,
        **sampling: Any,
    ) -> Iterator[Event]:
        """Blocking twin of :meth:`stream`; same arguments and events."""
        call = _call(
            messages,
            tools,
            enable_thinking,
            meta=meta,
            prompt=prompt,
            json_schema=_schema(json_schema, response_format),
            chat_template_kwargs=chat_template_kwargs,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            **sampling,
        )
        self.wait_ready()
        reply = self._start(call)
        self._pending += 1
        try:
            for step in reply:
                if self._delay:
                    time.sleep(self._delay)
                yield from _advance(call, step)
        finally:
            self._pending -= 1
            _settle(call)

    def generate(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> Turn:
        """The next scripted reply folded into a :class:`~mlxnb.events.Turn`, blocking.

        Same arguments as :meth:`stream`.
        """
        turn = collect(self.stream_sync(messages, tools, enable_thinking, **options))
        return with_parsed(turn, options)

    async def agenerate(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> Turn:
        """Awaitable twin of :meth:`generate`."""
        turn = await acollect(self.stream(messages, tools, enable_thinking, **options))
        return with_parsed(turn, options)

    # -- lifetime --------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Refuse further requests with :class:`~mlxnb.errors.EngineClosedError`. Idempotent.

        ``timeout`` is accepted for parity with :meth:`mlxnb.Engine.close` (nothing to wait for).
        """
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("ready" if self.ready else "loading")
        return f"FakeEngine({self.model_id!r}, {state}, scripted={len(self._replies)})"


def _call(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    enable_thinking: bool | None,
    *,
    meta: RequestMeta | None,
    prompt: str | None,
    json_schema: Mapping[str, Any] | None,
    chat_template_kwargs: Mapping[str, Any] | None,
    tool_choice: str | Mapping[str, Any] | None,
    parallel_tool_calls: bool,
    **sampling: Any,
) -> FakeCall:
    return FakeCall(
        messages=list(messages),
        tools=list(tools) if tools else None,
        enable_thinking=enable_thinking,
        meta=meta or RequestMeta(),
        prompt=prompt,
        json_schema=json_schema,
        chat_template_kwargs=chat_template_kwargs,
        sampling=dict(sampling),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
    )


def _checked(reply: Sequence[Step]) -> tuple[Step, ...]:
    steps = tuple(reply)
    raises = [i for i, step in enumerate(steps) if isinstance(step, BaseException)]
    dones = [i for i, step in enumerate(steps) if isinstance(step, Done)]
    end = raises[0] if raises else len(steps) - 1
    if not raises and (not dones or dones[0] != end):
        raise ValueError("a scripted reply must end with a Done event (or raise an exception)")
    if dones and dones[0] < end:
        raise ValueError("a scripted reply has steps after its Done event")
    return steps[: end + 1]


def _advance(call: FakeCall, step: Step) -> Iterator[Event]:
    if isinstance(step, BaseException):
        call.outcome = "raised"
        raise step
    call.events.append(step)
    if isinstance(step, Done):
        call.outcome = "finished"  # before the yield: a consumer may stop right at Done
    yield step


def _settle(call: FakeCall) -> None:
    if call.outcome == "streaming":
        call.outcome = "cancelled"


def _schema(json_schema: Any, response_format: Any) -> dict[str, Any] | None:
    """The schema a request asked for, however it was given (checked as the engine checks)."""
    shape = requested_format({"json_schema": json_schema, "response_format": response_format})
    return None if shape is None else dict(shape.schema)
