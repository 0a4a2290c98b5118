"""A conversation with a model: the history plus the tool loop, usable with or without the widget.

Each user message starts a *chat turn* of one or more *rounds*: a round is one request to the
engine. When a round ends in tool calls, the tools run in the kernel, their results join the
history and the next round starts, up to ``max_tool_rounds`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from mlxnb._chat_turn import (
    ChatEvent,
    ChatTurn,
    ContextTrimmed,
    RoundStart,
    TurnProgress,
    sum_usage,
)
from mlxnb._engine.request import RequestMeta
from mlxnb._engine.response_format import ResponseFormat, requested_format
from mlxnb._ids import new_conversation_id
from mlxnb._images import PYTHON_POLICY, load_images, no_vision_error, user_message
from mlxnb._tools import Tool, ToolResult, as_tools, execute_tool
from mlxnb.errors import (
    ContextLengthError,
    ConversationBusyError,
    EmptyHistoryError,
    InvalidRequestError,
)
from mlxnb.events import (
    Event,
    FinishReason,
    TurnBuilder,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ChatEngine",
    "ChatEvent",
    "ChatTurn",
    "ContextTrimmed",
    "Conversation",
    "GenerationOptions",
    "RoundStart",
    "sum_usage",
]

GenerationOptions = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
"""Extra ``engine.stream`` options: a mapping, or a factory called once per request."""


class ChatEngine(Protocol):
    """What a conversation needs from an engine (:class:`mlxnb.Engine` has it all)."""

    model_id: str

    @property
    def ready(self) -> bool:
        """Whether loading has finished."""

    @property
    def supports_thinking(self) -> bool:
        """Whether the model has thinking markers."""

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        """Generate one reply as events."""


class Conversation:
    """A chat history with tools, driven through ``engine.stream``.

    Args:
        engine: The engine that generates (:func:`mlxnb.load`).
        system: An optional system prompt.
        tools: Python functions (or :class:`~mlxnb.Tool`) the model may call.
        max_tool_rounds: Most tool rounds per user message; then the turn ends with a note.
        enable_thinking: Default for the chat template's ``enable_thinking`` (``None`` = the
            template's default).
        generation_options: Extra ``engine.stream`` options (``max_tokens``, ``temperature``…),
            or a factory returning them, called once per request. With ``response_format``
            (a pydantic model class or a JSON schema) every answer is held to it and
            ``ChatTurn.parsed`` holds it parsed.
        source: Audit source recorded with each request.
        truncate: When the history no longer fits the model's context (the engine refuses the
            request with :class:`~mlxnb.errors.ContextLengthError`), leave out the oldest turns
            (the system prompt always stays) until it fits, and say so with a
            :class:`ContextTrimmed` event. Off by default: the turn then ends with the error.
            The history itself keeps every message.
    """

    def __init__(
        self,
        engine: ChatEngine,
        *,
        system: str | None = None,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        max_tool_rounds: int = 5,
        enable_thinking: bool | None = None,
        generation_options: GenerationOptions | None = None,
        source: str = "python",
        truncate: bool = False,
    ) -> None:
        if max_tool_rounds < 0:
            raise InvalidRequestError("max_tool_rounds must be >= 0")
        self._busy = False
        self._skip = 0  # oldest turns the requests leave out (truncate=True), per engine
        self._engine = engine
        self.truncate = truncate
        self.system = system
        self.tools: dict[str, Tool] = as_tools(tools)
        self.max_tool_rounds = max_tool_rounds
        self.enable_thinking = enable_thinking
        self.generation_options = generation_options
        self.source = source
        self.conversation_id = new_conversation_id()
        self._messages: list[dict[str, Any]] = []
        self._starts: list[int] = []
        self._turns: list[ChatTurn] = []
        self._format: ResponseFormat | None = None  # the last request's response format
        self.clear()

    @property
    def engine(self) -> ChatEngine:
        """The engine that answers; set it to go on with another model (the history stays).

        Raises:
            ConversationBusyError: On setting, while a turn is running.
        """
        return self._engine

    @engine.setter
    def engine(self, engine: ChatEngine) -> None:
        self._check_idle()
        if engine is not self._engine:
            self._engine = engine
            self._skip = 0  # another model: another context length

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The OpenAI-style history (a copy): system, user, assistant and tool messages."""
        return copy.deepcopy(self._messages)

    @property
    def turns(self) -> tuple[ChatTurn, ...]:
        """The finished chat turns, oldest first."""
        return tuple(self._turns)

    @property
    def busy(self) -> bool:
        """Whether a turn is running."""
        return self._busy

    def clear(self) -> None:
        """Forget the history (the system prompt stays)."""
        self._check_idle()
        self._messages = [{"role": "system", "content": self.system}] if self.system else []
        self._starts.clear()
        self._turns.clear()
        self._skip = 0

    def undo(self) -> str:
        """Remove the last turn from the history and return its user text (to regenerate).

        Use :meth:`stream_again` to regenerate with the same images too.
        """
        return message_text(self._undo())

    def _undo(self) -> dict[str, Any]:
        self._check_idle()
        if not self._starts:
            raise EmptyHistoryError("there is no turn to undo")
        start = self._starts.pop()
        message = self._messages[start]
        del self._messages[start:]
        self._turns.pop()
        self._skip = min(self._skip, max(len(self._starts) - 1, 0))
        return message

    async def stream_again(
        self, *, enable_thinking: bool | None = None
    ) -> AsyncIterator[ChatEvent]:
        """Drop the last turn and stream a new answer to the same message (images included)."""
        message = self._undo()
        async with contextlib.aclosing(self._stream_message(message, enable_thinking)) as events:
            async for event in events:
                yield event

    def _check_idle(self) -> None:
        if self._busy:
            raise ConversationBusyError("a turn is running; stop it first")

    def _options(self) -> dict[str, Any]:
        extra = self.generation_options
        options = dict(extra() if callable(extra) else (extra or {}))
        meta = RequestMeta(source=self.source, conversation_id=self.conversation_id)
        options.setdefault("meta", meta)
        return options

    async def ask(
        self, text: str, *, images: object = None, enable_thinking: bool | None = None
    ) -> ChatTurn:
        """Send a user message and return the finished turn (tools run as needed).

        Args:
            text: The user's message.
            images: An image or a list of them (PIL images, numpy arrays, matplotlib figures,
                paths, bytes, data URLs); the model must be a vision model.
            enable_thinking: Overrides the conversation's default for this turn.
        """
        async for event in self.stream(text, images=images, enable_thinking=enable_thinking):
            if isinstance(event, ChatTurn):
                return event
        raise AssertionError("stream ended without a ChatTurn")  # pragma: no cover

    async def stream(
        self, text: str, *, images: object = None, enable_thinking: bool | None = None
    ) -> AsyncIterator[ChatEvent]:
        """Send a user message and stream everything that happens, ending with the ChatTurn.

        Cancelling the consuming task (or closing this generator) stops generation within
        one step; the partial turn is kept with ``finish_reason="cancelled"``. Engine errors
        end the turn with ``finish_reason="error"`` instead of raising.

        Args:
            text: The user's message.
            images: Images shown with it (see :meth:`ask`); loaded and checked here, once.
            enable_thinking: Overrides the conversation's default for this turn.

        Yields:
            RoundStart, the engine's events, a ToolResult per executed call, then the ChatTurn.

        Raises:
            InvalidRequestError: An image cannot be used (before anything is sent).
        """
        self._check_idle()
        loaded = load_images(images, policy=PYTHON_POLICY) if images is not None else None
        if loaded and self.engine.ready and getattr(self.engine, "kind", None) == "text":
            raise no_vision_error(self.engine.model_id, len(loaded))
        # Closing this generator must close the inner one at once (Stop records the turn).
        inner = self._stream_message(user_message(text, loaded), enable_thinking)
        async with contextlib.aclosing(inner) as events:
            async for event in events:
                yield event

    async def _stream_message(
        self, message: dict[str, Any], enable_thinking: bool | None
    ) -> AsyncGenerator[ChatEvent, None]:
        self._check_idle()
        self._busy = True
        text = message_text(message)
        self._starts.append(len(self._messages))
        self._messages.append(message)
        thinking = self.enable_thinking if enable_thinking is None else enable_thinking
        schemas = [spec.schema() for spec in self.tools.values()] or None
        progress = TurnProgress(text)
        builder: TurnBuilder | None = None
        reason: FinishReason = "stop"
        error: str | None = None
        try:
            for round_no in range(self.max_tool_rounds + 1):
                yield RoundStart(round_no)
                builder = TurnBuilder()
                progress.new_round()
                events = self._request(schemas, thinking)
                async with contextlib.aclosing(events):
                    async for event in events:
                        if isinstance(event, ContextTrimmed):
                            if event.left_out != progress.left_out:
                                progress.left_out = event.left_out
                                yield event
                            continue
                        progress.observe(event)
                        builder.add(event)
                        yield event
                turn, builder = builder.build(), None
                progress.rounds.append(turn)
                self._messages.append(turn.to_message())
                reason, error = turn.finish_reason, turn.error
                if not turn.tool_calls or reason in ("length", "cancelled", "error"):
                    break
                if round_no == self.max_tool_rounds:
                    error = f"stopped after {self.max_tool_rounds} tool rounds (max_tool_rounds)"
                    break
                for call in turn.tool_calls:
                    result = await execute_tool(self.tools, call)
                    progress.results.append(result)
                    self._messages.append(result.to_message())
                    yield result
        except (asyncio.CancelledError, GeneratorExit):
            self._close_partial(progress, builder, "cancelled", None)
            self._turns.append(progress.finish("cancelled", None))
            self._busy = False
            raise
        except Exception as exc:
            reason, error = "error", f"{type(exc).__name__}: {exc}"
            self._close_partial(progress, builder, reason, error)
        chat_turn = progress.finish(reason, error)
        shape = self._format
        if shape is not None and reason == "stop":
            chat_turn = replace(chat_turn, parsed=shape.parse(chat_turn.content))
        self._turns.append(chat_turn)
        self._busy = False
        yield chat_turn

    async def _request(
        self, schemas: list[dict[str, Any]] | None, thinking: bool | None
    ) -> AsyncGenerator[Event | ContextTrimmed, None]:
        """One round's events; with ``truncate``, the oldest turns go until the request fits.

        The engine checks the context before any work (``ContextLengthError`` comes before the
        first event), so a refused attempt costs a prompt render only. How many turns were left
        out is kept for the next request, which starts from there.
        """
        while True:
            head = self._starts[0] if self._starts else len(self._messages)
            cut = self._starts[self._skip] if self._skip else head
            messages = self._messages[:head] + self._messages[cut:]
            options = self._options()  # a factory is called once per request
            self._format = requested_format(options)
            events = self.engine.stream(messages, schemas, thinking, **options)
            try:
                try:
                    first = await anext(aiter(events))
                except StopAsyncIteration:
                    return
                except ContextLengthError:
                    if not self.truncate or self._skip >= len(self._starts) - 1:
                        raise  # nothing older to leave out: the current turn alone is too long
                    self._skip += 1
                    continue
                yield ContextTrimmed(cut - head)
                yield first
                async for event in events:
                    yield event
                return
            finally:
                closer = getattr(events, "aclose", None)
                if closer is not None:
                    await closer()

    def _close_partial(
        self,
        progress: TurnProgress,
        builder: TurnBuilder | None,
        reason: FinishReason,
        error: str | None,
    ) -> None:
        """Keep the history well formed after a round or the tools were cut short."""
        if builder is not None:
            turn = progress.stopped_round(builder, reason, error)
            progress.rounds.append(turn)
            self._messages.append(turn.to_message())
            return
        answered = {r.call_id for r in progress.results}
        last = progress.rounds[-1] if progress.rounds else None
        for call in last.tool_calls if last else ():
            if call.id not in answered:
                message = ToolResult(call.id, call.name, dict(call.arguments), "", reason)
                self._messages.append(message.to_message())

    def to_dataframe(self) -> pd.DataFrame:
        """One row per chat turn: messages, tool calls, finish reason and statistics."""
        import pandas as pd

        rows = [
            (
                t.user,
                t.content,
                t.reasoning,
                [call.name for call in t.tool_calls],
                t.finish_reason,
                t.error,
                t.time_to_first_token,
                t.tokens_per_second,
                t.usage.prompt_tokens,
                t.usage.completion_tokens,
                t.seconds,
                t.thinking_seconds,
                len(t.rounds),
            )
            for t in self._turns
        ]
        frame: pd.DataFrame = pd.DataFrame(rows, columns=list(_COLUMNS))
        return frame


_COLUMNS = (
    "user", "content", "reasoning", "tool_calls", "finish_reason", "error",
    "time_to_first_token", "tokens_per_second", "prompt_tokens", "completion_tokens",
    "seconds", "thinking_seconds", "rounds",
)  # fmt: skip


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return "" if content is None else str(content)
