"""A conversation with a model: the history plus the tool loop, usable with or without the widget.

Each user message starts a *chat turn* of one or more *rounds*: a round is one request to the
engine. When a round ends in tool calls, the tools run in the kernel (:mod:`mlxnb._chat_tools`:
approval, threads), their results join the history and the next round starts, up to
``max_tool_rounds`` times. An answer cut by ``max_tokens`` can be continued in place, and an
earlier user message edited and answered again (the replaced history is kept as a branch).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from mlxnb._audit import AuditLog
from mlxnb._chat_history import HistoryEdits, last_turn, message_text
from mlxnb._chat_saved import SavedHistory, log_for
from mlxnb._chat_tools import Approve, ToolApproval, approver_for, run_calls, unanswered
from mlxnb._chat_turn import (
    ChatEvent,
    ChatTurn,
    ContextTrimmed,
    RoundStart,
    TurnProgress,
    join_rounds,
    sum_usage,
    turns_frame,
)
from mlxnb._engine.request import RequestMeta
from mlxnb._engine.response_format import ResponseFormat, requested_format
from mlxnb._ids import new_conversation_id
from mlxnb._images import PYTHON_POLICY, load_images, no_vision_error, user_message
from mlxnb._tools import Tool, ToolResult, as_tools
from mlxnb.errors import (
    ContextLengthError,
    ConversationBusyError,
    InvalidRequestError,
    MlxnbError,
)
from mlxnb.events import Event, FinishReason, Turn, TurnBuilder

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
    "ToolApproval",
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


class Conversation(HistoryEdits, SavedHistory):
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
        approve: Ask before each tool call runs. ``True``: the widget shows Run / Deny on the
            call (a plain conversation asks on standard input, ``y`` runs it); a function of
            the :class:`~mlxnb.events.ToolCall` returning ``True``/``False`` (or awaitable)
            decides itself. A denied call does not run; the model reads that the user denied
            it. ``False`` (default) runs every call.
        save: Where the history is saved after each finished turn, for ``resume=`` in a later
            kernel: ``True`` (default) the engine's audit log file (or the default one), an
            :class:`~mlxnb.AuditLog`, or ``False``. Nothing is saved when that log was opened
            with ``log_content=False`` or the engine has ``audit=False``.
        resume: The id of a saved conversation (:attr:`conversation_id`, listed by
            :func:`mlxnb.conversations`) to go on with: its messages, tool calls, tool results
            and thinking come back as the history. Raises
            :class:`~mlxnb.errors.ConversationNotFoundError` when there is none.
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
        approve: Approve = False,
        save: AuditLog | bool = True,
        resume: str | None = None,
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
        self.approve = approve
        self._branches: list[list[dict[str, Any]]] = []
        self.conversation_id = new_conversation_id()
        self._messages: list[dict[str, Any]] = []
        self._starts: list[int] = []
        self._turns: list[ChatTurn] = []
        self._format: ResponseFormat | None = None  # the last request's response format
        self._history_log = log_for(engine, save)
        self._transcript: list[dict[str, Any]] = []  # the widget's, saved with the history
        self.clear()
        if resume is not None:
            self._restore(self._load(resume))

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
    def approve(self) -> Approve:
        """Whether (and how) tool calls wait for approval; see the class's ``approve``."""
        return self._approve

    @approve.setter
    def approve(self, approve: Approve) -> None:
        self._approver = approver_for(approve)
        self._approve = approve

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
        """Start afresh under a new :attr:`conversation_id` (the system prompt stays).

        The history so far stays saved under the old id.
        """
        self._check_idle()
        if self._starts:
            self.conversation_id = new_conversation_id()
        self._transcript = []
        self._messages = [{"role": "system", "content": self.system}] if self.system else []
        self._starts.clear()
        self._turns.clear()
        self._branches.clear()
        self._skip = 0

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
        return await last_turn(self.stream(text, images=images, enable_thinking=enable_thinking))

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
            RoundStart, the engine's events, a ToolApproval before each call that waits for
            approval (``approve=``), a ToolResult per call, then the ChatTurn.

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
        self,
        message: dict[str, Any] | None,
        enable_thinking: bool | None,
        resume: ChatTurn | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """One chat turn: a new user ``message``, or (``resume``) the last turn continued."""
        self._check_idle()
        self._busy = True
        partial: Turn | None = None  # the round being continued, until it is joined
        if resume is None:
            assert message is not None
            progress = TurnProgress(message_text(message))
            self._starts.append(len(self._messages))
            self._messages.append(message)
        else:
            progress = TurnProgress(resume.user)
            partial = progress.resume(resume)
            self._turns.pop()
        thinking = self.enable_thinking if enable_thinking is None else enable_thinking
        schemas = [spec.schema() for spec in self.tools.values()] or None
        builder: TurnBuilder | None = None
        reason: FinishReason = "stop"
        error: str | None = None
        try:
            for round_no in range(len(progress.rounds), self.max_tool_rounds + 1):
                yield RoundStart(round_no)
                builder = TurnBuilder()
                progress.new_round()
                events = self._request(schemas, thinking, continuing=partial is not None)
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
                turn, builder = self._add_round(progress, builder.build(), partial), None
                partial = None
                reason, error = turn.finish_reason, turn.error
                if not turn.tool_calls or reason in ("length", "cancelled", "error"):
                    break
                if round_no == self.max_tool_rounds:
                    error = f"stopped after {self.max_tool_rounds} tool rounds (max_tool_rounds)"
                    break
                calls = run_calls(self.tools, turn.tool_calls, self._approver)
                async with contextlib.aclosing(calls):
                    async for item in calls:
                        if isinstance(item, ToolResult):
                            progress.results.append(item)
                            self._messages.append(item.to_message())
                        yield item
        except (asyncio.CancelledError, GeneratorExit):
            self._close_partial(progress, builder, "cancelled", None, partial)
            self._turns.append(progress.finish("cancelled", None))
            self._busy = False
            self._autosave()
            raise
        except Exception as exc:
            reason, error = "error", f"{type(exc).__name__}: {exc}"
            self._close_partial(progress, builder, reason, error, partial)
        chat_turn = progress.finish(reason, error)
        shape = self._format
        if shape is not None and reason == "stop":
            chat_turn = replace(chat_turn, parsed=shape.parse(chat_turn.content))
        self._turns.append(chat_turn)
        self._busy = False
        self._autosave()
        yield chat_turn

    def _add_round(self, progress: TurnProgress, turn: Turn, partial: Turn | None) -> Turn:
        """Record a finished round; a continued one is joined to the round it carries on."""
        if partial is not None:
            turn = join_rounds(partial, turn)
            self._messages[-1] = turn.to_message()
        else:
            self._messages.append(turn.to_message())
        progress.rounds.append(turn)
        return turn

    async def _request(
        self, schemas: list[dict[str, Any]] | None, thinking: bool | None, continuing: bool
    ) -> AsyncGenerator[Event | ContextTrimmed, None]:
        """One round's events; with ``truncate``, the oldest turns go until the request fits.

        The engine checks the context before any work (``ContextLengthError`` comes before the
        first event), so a refused attempt costs a prompt render only. How many turns were left
        out is kept for the next request, which starts from there. ``continuing``: the last
        message is an assistant answer to carry on (no generation prompt after it).
        """
        while True:
            head = self._starts[0] if self._starts else len(self._messages)
            cut = self._starts[self._skip] if self._skip else head
            messages = self._messages[:head] + self._messages[cut:]
            options = self._options()  # a factory is called once per request
            if continuing:
                template = dict(options.get("chat_template_kwargs") or {})
                options["chat_template_kwargs"] = {**template, "continue_final_message": True}
            self._format = requested_format(options)
            older = self.truncate and self._skip < len(self._starts) - 1
            if older and not await self._fits(messages, schemas, thinking, options):
                self._skip += 1  # counted, not refused: no attempt, no error row
                continue
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

    async def _fits(
        self,
        messages: list[dict[str, Any]],
        schemas: list[dict[str, Any]] | None,
        thinking: bool | None,
        options: Mapping[str, Any],
    ) -> bool:
        """Whether the engine would take this request's length.

        Engines that cannot count say yes, and the request's refusal is caught instead.
        """
        fits = getattr(self.engine, "afits_context", None)
        if fits is None:
            return True
        rendering = ("max_tokens", "chat_template_kwargs", "tool_choice")
        asked = {name: options[name] for name in rendering if options.get(name) is not None}
        try:
            return bool(await fits(messages, schemas, thinking, **asked))
        except MlxnbError:
            return True  # the request itself reports what is wrong

    def _close_partial(
        self,
        progress: TurnProgress,
        builder: TurnBuilder | None,
        reason: FinishReason,
        error: str | None,
        partial: Turn | None,
    ) -> None:
        """Keep the history well formed after a round or the tools were cut short."""
        if builder is not None:
            self._add_round(progress, progress.stopped_round(builder, reason, error), partial)
            return
        if partial is not None:  # stopped before the continuation began: the answer stays
            progress.rounds.append(partial)
            return
        last = progress.rounds[-1] if progress.rounds else None
        if last is not None:
            self._messages.extend(unanswered(last.tool_calls, progress.results, reason))

    def to_dataframe(self) -> pd.DataFrame:
        """One row per chat turn: messages, tool calls, finish reason and statistics."""
        return turns_frame(self._turns)
