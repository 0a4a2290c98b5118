"""The chat widget: an anywidget that streams a :class:`~mlxnb._chat.Conversation` into the page.

Deltas travel as coalesced custom messages (*ops*, see ``widgets/src/protocol.js``); the finished
turn is written to the ``transcript`` traitlet, so a re-displayed widget or a reopened notebook
shows the whole conversation. Generation runs as a task on the kernel's event loop: message
handlers return at once, Stop arrives while tokens stream, and other cells keep running.

Images sent with a message (``data:`` URLs from the page, any image object from :meth:`ask`)
are loaded and checked before the turn starts; a bad image or a text-only model is refused at
once. The transcript keeps only small thumbnails of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from mlxnb._chat import ChatEngine, ChatEvent, ChatTurn, Conversation
from mlxnb._ids import new_message_id
from mlxnb._images import (
    HTTP_POLICY,
    PYTHON_POLICY,
    Image,
    ImagePolicy,
    load_images,
    no_vision_error,
)
from mlxnb._widget.protocol import Batcher, OpRecorder
from mlxnb.errors import (
    ConversationBusyError,
    EmptyHistoryError,
    GenerationError,
    InvalidRequestError,
    MlxnbError,
    ModelLoadError,
)

if TYPE_CHECKING:
    import pandas as pd

_STATIC = Path(__file__).parent.parent / "static"
_UNBUILT_ESM = """export default { render({ el }) {
  el.textContent = "mlxnb: the chat widget's front end is not built. Run `make widget` " +
    "(or `cd widgets && npm ci && npm run build`) and restart the kernel.";
} };"""


def _asset(name: str, fallback: str) -> Path | str:
    path = _STATIC / name
    return path if path.is_file() else fallback


Events = Callable[[bool | None], AsyncIterator[ChatEvent]]
"""Starts a turn's event stream, given the thinking switch."""


class ChatWidget(anywidget.AnyWidget):
    """A chat with a model in the notebook: streaming answers, thinking and tool-call panes.

    Display it as a cell's last expression. With a vision model, images can be attached (a
    button, drag and drop, paste) and are shown as thumbnails in the conversation. Python
    ``tools`` are described to the model from their signature and docstring and run in the
    kernel. Everything the page does is also available from Python: :meth:`ask`, :meth:`stop`,
    :meth:`regenerate`, :meth:`clear`, :attr:`messages`, :meth:`to_dataframe`.

    Args:
        engine: The engine (:func:`mlxnb.load`; it may still be loading).
        enable_thinking: Initial state of the thinking toggle.
        flush_interval: Seconds between streamed batches.
        **conversation_options: Passed to :class:`~mlxnb.Conversation`: ``system``, ``tools``,
            ``max_tool_rounds``, ``generation_options``.
    """

    _esm = _asset("widget.js", _UNBUILT_ESM)
    _css = _asset("widget.css", "")

    transcript = traitlets.List(traitlets.Dict()).tag(sync=True)
    status = traitlets.Unicode("loading").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    model_name = traitlets.Unicode("").tag(sync=True)
    enable_thinking = traitlets.Bool(True).tag(sync=True)
    supports_thinking = traitlets.Bool(False).tag(sync=True)
    supports_images = traitlets.Bool(False).tag(sync=True)
    tool_names = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(
        self,
        engine: ChatEngine,
        *,
        enable_thinking: bool = True,
        flush_interval: float = 0.04,
        **conversation_options: Any,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.conversation = Conversation(engine, source="widget", **conversation_options)
        self.model_name = engine.model_id
        self.enable_thinking = enable_thinking
        self.tool_names = list(self.conversation.tools)
        self.flush_interval = flush_interval
        self._task: asyncio.Task[ChatTurn | None] | None = None
        self._stopping = False
        self._running = False
        self._kind: str | None = None
        self.on_msg(self._on_frontend_message)
        if not self._check_ready():
            # without a running loop (a plain script) readiness is checked again on first use
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._await_ready())

    # -- readiness ---------------------------------------------------------------------------

    def _check_ready(self) -> bool:
        """Update ``status`` from the engine; True once loading has finished either way."""
        if not self.engine.ready:
            self.status = "loading"
            return False
        try:
            self.engine.wait_ready(0)
        except Exception as exc:
            self.error = f"Could not load {self.engine.model_id}: {type(exc).__name__}: {exc}"
            self.status = "error"
            return True
        self.supports_thinking = bool(self.engine.supports_thinking)
        if self._kind is None:
            with contextlib.suppress(MlxnbError):  # a closed engine: its requests say so
                self._kind = getattr(self.engine, "kind", None)
            self.supports_images = self._kind == "vision"
        if self.status in ("loading", "error"):
            self.status = "ready"
        return True

    async def _await_ready(self) -> None:
        while not self._check_ready():
            await asyncio.sleep(0.05)

    # -- front-end messages ------------------------------------------------------------------

    def _on_frontend_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "send":
                images = content.get("images") or None
                if images is not None and not isinstance(images, list):
                    raise InvalidRequestError("images must be a list of data: URLs")
                self._start(str(content.get("text", "")), images, policy=HTTP_POLICY)
            elif kind == "regenerate":
                self._start(None)
            elif kind == "stop":
                self.stop()
            elif kind == "clear":
                self.clear()
        except MlxnbError as exc:  # busy, still loading, nothing to regenerate, a bad image
            self.send({"type": "refused", "message": str(exc)})

    # -- turns -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a reply is being generated."""
        return self._task is not None and not self._task.done()

    def _start(
        self, text: str | None, images: object = None, *, policy: ImagePolicy = PYTHON_POLICY
    ) -> asyncio.Task[ChatTurn | None]:
        """Check a request and start its turn; ``text=None`` regenerates the last one."""
        if self.busy:
            raise ConversationBusyError("a reply is being generated; stop it first")
        if not self._check_ready():
            raise ConversationBusyError(f"{self.model_name} is still loading")
        if self.status == "error":
            raise ModelLoadError(self.error)
        events: Events
        if text is None:
            turns = self.conversation.turns
            if not turns:
                raise EmptyHistoryError("there is no answer to regenerate")
            text = turns[-1].user
            thumbnails = list(self.transcript[-1].get("images", ())) if self.transcript else []
            self.transcript = self.transcript[:-1]

            def events(thinking: bool | None) -> AsyncIterator[ChatEvent]:
                return self.conversation.stream_again(enable_thinking=thinking)

        else:
            loaded = self._load_images(images, policy)
            thumbnails = [image.thumbnail_data_url() for image in loaded]
            message = text

            def events(thinking: bool | None) -> AsyncIterator[ChatEvent]:
                return self.conversation.stream(
                    message, images=loaded or None, enable_thinking=thinking
                )

        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(text, thumbnails, events))
        return self._task

    def _load_images(self, images: object, policy: ImagePolicy) -> list[Image]:
        """Load and check a message's images before anything starts (refusals come at once)."""
        loaded = load_images(images, policy=policy)
        if loaded and self._kind == "text":
            raise no_vision_error(self.model_name, len(loaded))
        return loaded

    async def _run(self, text: str, thumbnails: list[str], events: Events) -> ChatTurn | None:
        self._running = True
        if self._stopping:  # Stop came before this task's first step: cancel at the first await
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
        turn_id = new_message_id()
        self.status = "generating"
        self.send({"type": "start", "turn": {"id": turn_id, "user": text, "images": thumbnails}})
        batcher = Batcher(
            lambda ops: self.send({"type": "ops", "id": turn_id, "ops": ops}),
            interval=self.flush_interval,
        )
        recorder = OpRecorder(turn_id, text, batcher, images=thumbnails)
        thinking = self.enable_thinking if self.supports_thinking else None
        turns = self.conversation.turns
        before = turns[-1] if turns else None  # regenerating drops it: compare, do not count
        failure: str | None = None
        try:
            async for event in events(thinking):
                recorder.add(event)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            turns = self.conversation.turns
            chat_turn = turns[-1] if turns and turns[-1] is not before else None
            entry = recorder.finish(chat_turn, failure)
            self.transcript = [*self.transcript, entry]
            self.status = "ready"
            self._stopping = self._running = False
        return chat_turn

    async def ask(self, text: str, images: object = None) -> ChatTurn:
        """Send a message as if typed in the page; returns the finished turn.

        Args:
            text: The message.
            images: An image or a list of them (PIL images, numpy arrays, matplotlib figures,
                paths, bytes, ``data:`` URLs) for a vision model; the conversation shows
                thumbnails of them.

        Raises:
            MlxnbError: The model could not be loaded.
            InvalidRequestError: An image cannot be used, or the model cannot see images.
            RuntimeError: A reply is already being generated.
        """
        await self._await_ready()
        if self.status == "error":
            self.engine.wait_ready(0)
        return await self._finished(self._start(text, images))

    async def regenerate(self) -> ChatTurn:
        """Drop the last answer and generate it again (for the same message and images)."""
        await self._await_ready()
        return await self._finished(self._start(None))

    @staticmethod
    async def _finished(task: asyncio.Task[ChatTurn | None]) -> ChatTurn:
        turn = await task
        if turn is None:  # pragma: no cover - the conversation records every started turn
            raise GenerationError("the turn ended without a result")
        return turn

    def stop(self) -> None:
        """Stop the reply being generated (within one token); the partial answer stays."""
        if self.busy and self._task is not None:
            self._stopping = True
            if self._running:
                self._task.cancel()

    def close(self) -> None:
        """Stop generating (if busy) and close the widget's views."""
        if getattr(self, "_task", None) is not None:
            self.stop()
        super().close()

    def clear(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        if self.busy:
            raise ConversationBusyError("a reply is being generated; stop it first")
        self.conversation.clear()
        self.transcript = []

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The OpenAI-style history (a copy)."""
        return self.conversation.messages

    @property
    def turns(self) -> tuple[ChatTurn, ...]:
        """The finished turns."""
        return self.conversation.turns

    def to_dataframe(self) -> pd.DataFrame:
        """One row per turn with messages, tool calls and statistics."""
        return self.conversation.to_dataframe()


def chat(model: ChatEngine | str | os.PathLike[str], **options: Any) -> ChatWidget:
    """Open a chat widget on a model or engine in one line.

    A path or repo id starts loading in the background; the widget shows 'loading model…'
    meanwhile, and the error in the chat if loading fails.

    Args:
        model: An engine, a local model directory or a Hugging Face repo id.
        **options: Passed to :class:`ChatWidget` (``system``, ``tools``…).

    Returns:
        The widget (display it as the cell's last expression).
    """
    if isinstance(model, str | os.PathLike):
        from mlxnb._engine import load

        model = load(os.fspath(model), wait=False)
    return ChatWidget(model, **options)
