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
import copy
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from mlxnb._chat import ChatEngine, ChatEvent, ChatTurn, Conversation, ToolApproval
from mlxnb._engine import ModelHandle, ModelPool, default_pool
from mlxnb._ids import new_message_id
from mlxnb._images import (
    HTTP_POLICY,
    PYTHON_POLICY,
    Image,
    ImagePolicy,
    load_images,
    no_vision_error,
)
from mlxnb._widget.control import PageApprovals, continued_entry, edit_index, on_loop
from mlxnb._widget.export import transcript_markdown, write_notebook
from mlxnb._widget.history import recent_list, save_quietly, transcript_of
from mlxnb._widget.mentions import namespace_names, resolve_mentions, user_namespace
from mlxnb._widget.models import ModelChoice, context_limit_of, pooled, readiness
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

    from mlxnb._engine.download import LoadProgress

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
    kernel. A picker in the header switches model mid-conversation (the history stays; each
    answer is labelled with the model that wrote it). With ``approve=True`` each tool call
    waits in its pane for Run or Deny; Continue carries on an answer cut by ``max_tokens``
    (:meth:`continue_answer`); a user message can be edited and sent again (:meth:`edit`, the
    replaced turns kept in :attr:`history_branches`). Everything the page does is also
    available from Python: :meth:`ask`, :meth:`stop`, :meth:`regenerate`, :meth:`clear`,
    :attr:`model`, :attr:`messages`, :meth:`to_dataframe`, :meth:`to_markdown`,
    :meth:`to_notebook`. The history is saved after each turn in the audit log's file; the
    Recent menu in the header (or :meth:`resume`, or ``resume=`` here) brings a saved
    conversation back, in this kernel or a later one, with its thinking and tool panes.

    Args:
        engine: The engine (:func:`mlxnb.load`; it may still be loading), a pool's
            :class:`~mlxnb.ModelHandle`, or a model or profile name the pool knows.
        models: The names the picker offers. Default: the pool's models and profiles when
            ``engine`` is a name or a handle, else only the engine's own model (no picker).
        pool: Where picked names are loaded (default: the handle's pool, else the kernel's).
        enable_thinking: Initial state of the thinking toggle.
        flush_interval: Seconds between streamed batches.
        truncate: When the conversation outgrows the model's context, leave out its oldest
            turns (the system prompt stays) and mark that in the chat, instead of ending the
            turn with a :class:`~mlxnb.errors.ContextLengthError`.
        namespace: Where ``@name`` mentions in a message are looked up (each adds a
            description of the variable for the model; the page completes the names).
            Default: the IPython user namespace of the kernel.
        **conversation_options: Passed to :class:`~mlxnb.Conversation`: ``system``, ``tools``,
            ``max_tool_rounds``, ``generation_options``, ``approve`` (``True``: Run / Deny
            buttons on each call; a function decides without asking), ``save``, ``resume``
            (a saved conversation's id: it is shown and goes on).
    """

    _esm = _asset("widget.js", _UNBUILT_ESM)
    _css = _asset("widget.css", "")

    transcript = traitlets.List(traitlets.Dict()).tag(sync=True)
    status = traitlets.Unicode("loading").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    model_name = traitlets.Unicode("").tag(sync=True)
    models = traitlets.List(traitlets.Unicode()).tag(sync=True)
    load_progress = traitlets.Dict().tag(sync=True)
    enable_thinking = traitlets.Bool(True).tag(sync=True)
    supports_thinking = traitlets.Bool(False).tag(sync=True)
    supports_images = traitlets.Bool(False).tag(sync=True)
    tool_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    conversation_id = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        engine: ChatEngine | str,
        *,
        models: Sequence[str] | None = None,
        pool: ModelPool | None = None,
        enable_thinking: bool = True,
        flush_interval: float = 0.04,
        truncate: bool = False,
        namespace: Mapping[str, Any] | None = None,
        **conversation_options: Any,
    ) -> None:
        super().__init__()
        self.namespace = namespace
        chosen = pooled(engine, pool or default_pool()) if isinstance(engine, str) else engine
        self._choice = ModelChoice(chosen, models, pool)
        self.engine: ChatEngine = chosen
        self.conversation = Conversation(
            chosen, source="widget", truncate=truncate, **conversation_options
        )
        self._recorder: OpRecorder | None = None  # the turn streaming now
        self._approvals = PageApprovals(self._tool_running)
        if conversation_options.get("approve") is True:  # ask in the page, not on stdin
            self.conversation.approve = self._approvals
        self.enable_thinking = enable_thinking
        self.tool_names = list(self.conversation.tools)
        if self.conversation.turns:  # resume=: show the saved conversation
            self.transcript = transcript_of(self.conversation, chosen.model_id)
        self.conversation_id = self.conversation.conversation_id
        self.flush_interval = flush_interval
        self._task: asyncio.Task[ChatTurn | None] | None = None
        self._stopping = False
        self._running = False
        self._kind: str | None = None
        self._ready_for: object = None  # the engine whose model was seen loaded (or failed)
        self._load_error: BaseException | None = None
        self._unwatch: Callable[[], None] | None = None
        self._loading: asyncio.Task[None] | None = None
        self.on_msg(self._on_frontend_message)
        self._attach(chosen)

    # -- the model ---------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model (or profile) answering now; set it to switch, as the picker does.

        The conversation goes on with the new model (its history stays). Setting it starts
        loading the model; the page shows its progress.

        Raises:
            ConversationBusyError: A reply is being generated (stop it first).
            ModelNotFoundError: Neither offered by the widget nor known to its pool.
        """
        return self.model_name

    @model.setter
    def model(self, name: str) -> None:
        if self.busy:
            raise ConversationBusyError(
                f"a reply is being generated; stop it before switching to {name}"
            )
        if name != self.model_name:
            self._attach(self._choice.engine_for(name))

    def _attach(self, engine: ChatEngine) -> None:
        """Make ``engine`` the one that answers; show its load progress until it is ready."""
        self.conversation.engine = engine
        self.engine = engine
        self.model_name = engine.model_id
        self.models = self._choice.names(engine.model_id)
        self._kind, self._ready_for, self._load_error = None, None, None
        self.error, self.load_progress = "", {}
        self.supports_images = self.supports_thinking = False  # until the model is loaded
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # a plain script: no loop, no live progress
            loop = asyncio.get_running_loop()
        if isinstance(engine, ModelHandle) and isinstance(engine.pool, ModelPool) and loop:
            running = loop

            def progressed(event: LoadProgress) -> None:  # on the pool's loader thread
                with contextlib.suppress(RuntimeError):  # the kernel's loop has closed
                    running.call_soon_threadsafe(self._show_progress, engine, event)

            self._unwatch = engine.pool.watch(engine.model, progressed)
        self.status = "loading"
        if not self._check_ready() and loop is not None:
            self._loading = loop.create_task(self._await_ready())  # held: tasks are weak refs

    def _show_progress(self, engine: ChatEngine, event: LoadProgress) -> None:
        if engine is not self.engine:
            return  # a model switched away from
        if event.stage in ("resolving", "downloading", "loading"):
            self.load_progress = {
                "model": self.model_name,
                "stage": event.stage,
                "fraction": event.fraction,
                "message": event.message,
            }
        else:
            self.load_progress = {}
            self._check_ready()

    def _refresh_models(self) -> None:
        self.models = self._choice.names(self.model_name)

    # -- readiness ---------------------------------------------------------------------------

    def _check_ready(self) -> bool:
        """Update ``status`` from the engine; True once loading has finished either way."""
        if self._ready_for is self.engine:
            return True
        found = readiness(self.engine)
        if found.state == "loading":
            if self.status != "generating":
                self.status = "loading"
            return False
        if found.state == "error":
            assert found.error is not None
            self._fail(found.error)
            return True
        self._ready_for = self.engine
        self.supports_thinking = bool(found.engine.supports_thinking)
        with contextlib.suppress(MlxnbError):  # a closed engine: its requests say so
            self._kind = getattr(found.engine, "kind", None)
        self.supports_images = self._kind == "vision"
        self.load_progress = {}
        if self.status in ("loading", "error"):
            self.status = "ready"
        return True

    def _fail(self, error: BaseException) -> None:
        self._ready_for, self._load_error = self.engine, error
        self.error = f"Could not load {self.model_name}: {type(error).__name__}: {error}"
        self.load_progress = {}
        self.status = "error"

    async def _await_ready(self) -> None:
        engine = self.engine
        if isinstance(engine, ModelHandle) and self._ready_for is not engine:
            try:  # starts the load (again, after a failure) and waits for it
                await engine.pool.aengine(engine.model)
            except Exception as exc:
                if engine is self.engine:
                    self._fail(exc)
                return
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
            elif kind == "model":
                self.model = str(content.get("name", ""))
            elif kind == "models":
                self._refresh_models()
            elif kind == "names":
                self._send_names()
            elif kind == "approve":
                self._approvals.answer(str(content.get("id", "")), bool(content.get("run")))
            elif kind == "continue":
                self._start(None, resume=True)
            elif kind == "edit":
                text = str(content.get("text", ""))
                self._start(text, edit=content.get("index"), policy=HTTP_POLICY)
            elif kind == "recent":  # a message, not a trait: keeps titles out of the notebook
                self.send({"type": "recent", "conversations": recent_list(self.conversation)})
            elif kind == "resume":
                self.resume(str(content.get("id", "")))
            elif kind == "export":
                self.send({"type": "export", "markdown": self.to_markdown()})
        except MlxnbError as exc:  # busy, still loading, nothing to regenerate, a bad image
            self.send({"type": "refused", "message": str(exc)})

    def _namespace(self) -> tuple[Mapping[str, Any], frozenset[str]]:
        if self.namespace is not None:
            return self.namespace, frozenset()
        return user_namespace()

    def _send_names(self) -> None:
        """Tell the page which variables ``@`` may complete (it filters them as one types)."""
        names = namespace_names(*self._namespace())
        self.send({"type": "names", "names": [list(pair) for pair in names]})

    # -- turns -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a reply is being generated."""
        return self._task is not None and not self._task.done()

    def _tool_running(self, call_id: str) -> None:
        if self._recorder is not None:
            self._recorder.tool_status(call_id, "running")

    def _start(
        self,
        text: str | None,
        images: object = None,
        *,
        policy: ImagePolicy = PYTHON_POLICY,
        edit: Any = None,
        resume: bool = False,
    ) -> asyncio.Task[ChatTurn | None]:
        """Check a request and start its turn; ``text=None`` regenerates the last one.

        ``resume`` continues the last answer (cut by ``max_tokens``); ``edit`` (a turn's index)
        replaces that turn's message with ``text`` and the turns after it.
        """
        if self.busy:
            raise ConversationBusyError("a reply is being generated; stop it first")
        if not self._check_ready():
            raise ConversationBusyError(f"{self.model_name} is still loading")
        if self.status == "error":
            raise ModelLoadError(self.error)
        events: Events
        seed: dict[str, Any] | None = None
        if resume:
            seed = continued_entry(self.conversation.turns, self.transcript)
            text, thumbnails = str(seed.get("user", "")), list(seed.get("images", ()))
            context = list(seed.get("context", ()))
            self.transcript = self.transcript[:-1]

            def events(thinking: bool | None) -> AsyncIterator[ChatEvent]:
                return self.conversation.stream_continue(enable_thinking=thinking)

        elif text is None:
            turns = self.conversation.turns
            if not turns:
                raise EmptyHistoryError("there is no answer to regenerate")
            last = self.transcript[-1] if self.transcript else {}
            text = str(last.get("user", turns[-1].user))  # as written: mentions not expanded
            thumbnails = list(last.get("images", ()))
            context = list(last.get("context", ()))
            self.transcript = self.transcript[:-1]

            def events(thinking: bool | None) -> AsyncIterator[ChatEvent]:
                return self.conversation.stream_again(enable_thinking=thinking)

        else:
            loaded = self._load_images(images, policy)
            thumbnails = [image.thumbnail_data_url() for image in loaded]
            mentions = resolve_mentions(text, *self._namespace(), vision=self._kind == "vision")
            context, message = mentions.context, mentions.message
            loaded += mentions.images
            at = None if edit is None else edit_index(self.conversation.turns, edit)
            if at is not None:  # the edited message keeps its images; later turns go
                thumbnails = list(self.transcript[at].get("images", ()))
                self.transcript = self.transcript[:at]

            def events(thinking: bool | None) -> AsyncIterator[ChatEvent]:
                if at is not None:
                    return self.conversation.stream_edit(at, message, enable_thinking=thinking)
                return self.conversation.stream(
                    message, images=loaded or None, enable_thinking=thinking
                )

        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(text, thumbnails, events, context, seed)
        )
        return self._task

    def _load_images(self, images: object, policy: ImagePolicy) -> list[Image]:
        """Load and check a message's images before anything starts (refusals come at once)."""
        loaded = load_images(images, policy=policy)
        if loaded and self._kind == "text":
            raise no_vision_error(self.model_name, len(loaded))
        return loaded

    async def _run(
        self,
        text: str,
        thumbnails: list[str],
        events: Events,
        context: Sequence[dict[str, Any]] = (),
        seed: dict[str, Any] | None = None,
    ) -> ChatTurn | None:
        """Stream a turn into the page; ``seed`` is the entry a continued answer goes on from."""
        self._running = True
        if self._stopping:  # Stop came before this task's first step: cancel at the first await
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
        turn_id = str(seed["id"]) if seed else new_message_id()
        parts = list(seed.get("parts", ())) if seed else []
        model = self.model_name
        self.status = "generating"
        batcher = Batcher(
            lambda ops: self.send({"type": "ops", "id": turn_id, "ops": ops}),
            interval=self.flush_interval,
        )
        recorder = OpRecorder(
            turn_id, text, batcher, images=thumbnails, model=model, context=context, parts=parts
        )
        parts = recorder.turn["parts"]  # as the recorder goes on from them (a thought reopened)
        self.send(
            {
                "type": "start",
                "turn": {"id": turn_id, "user": text, "images": thumbnails, "model": model}
                | ({"context": list(context)} if context else {})
                | ({"parts": copy.deepcopy(parts)} if parts else {}),
            }
        )
        self._recorder = recorder
        thinking = self.enable_thinking if self.supports_thinking else None
        turns = self.conversation.turns
        before = turns[-1] if turns else None  # regenerating drops it: compare, do not count
        failure: str | None = None
        try:
            async for event in events(thinking):
                if isinstance(event, ToolApproval) and self.conversation.approve is not (
                    self._approvals
                ):
                    continue  # a function decides: the page has no Run / Deny to show
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
            entry = recorder.finish(chat_turn, failure, context_limit_of(self.conversation.engine))
            # One sync message: a page never shows the ended turn while its input is still locked
            with self.hold_sync():
                self.transcript = [*self.transcript, entry]
                self.status = "ready"
            save_quietly(self.conversation, self.transcript)
            self._recorder = None
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
        if self.status == "error" and self._load_error is not None:
            raise self._load_error
        return await self._finished(self._start(text, images))

    async def regenerate(self) -> ChatTurn:
        """Drop the last answer and generate it again (for the same message and images)."""
        await self._await_ready()
        return await self._finished(self._start(None))

    async def continue_answer(self) -> ChatTurn:
        """Carry on the last answer where ``max_tokens`` cut it, as the Continue button does."""
        await self._await_ready()
        return await self._finished(self._start(None, resume=True))

    async def edit(self, index: int, text: str) -> ChatTurn:
        """Edit turn ``index``'s message and answer it again; later turns are replaced.

        The history as it was is kept in :attr:`history_branches`.
        """
        await self._await_ready()
        return await self._finished(self._start(text, edit=index))

    @property
    def history_branches(self) -> list[list[dict[str, Any]]]:
        """Histories that edits replaced (see :attr:`Conversation.history_branches`)."""
        return self.conversation.history_branches

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
            if self._running:  # the page's Stop may come on a subshell's thread: wake the loop
                on_loop(self._task.get_loop(), self._task.cancel)

    def close(self) -> None:
        """Stop generating (if busy) and close the widget's views."""
        if getattr(self, "_task", None) is not None:
            self.stop()
        unwatch = getattr(self, "_unwatch", None)
        if unwatch is not None:
            unwatch()
            self._unwatch = None
        super().close()

    def resume(self, conversation_id: str) -> None:
        """Show a saved conversation and go on with it, as the Recent menu does.

        Raises:
            ConversationNotFoundError: No saved conversation has this id.
            ConversationBusyError: A reply is being generated.
        """
        if self.busy:
            raise ConversationBusyError("a reply is being generated; stop it first")
        self.conversation.resume(conversation_id)
        self.transcript = transcript_of(self.conversation, self.model_name)
        self.conversation_id = conversation_id

    def clear(self) -> None:
        """Start a new conversation (the system prompt stays; the old one stays saved)."""
        if self.busy:
            raise ConversationBusyError("a reply is being generated; stop it first")
        self.conversation.clear()
        self.transcript = []
        self.conversation_id = self.conversation.conversation_id

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

    def to_markdown(self) -> str:
        """The conversation as a markdown document, as the page shows it.

        Each message comes with the context its ``@name`` mentions inserted; each answer with
        its model, thinking (collapsed), tool calls and results; code blocks stay fenced.
        """
        return transcript_markdown(self.transcript, title=self._export_title())

    def to_notebook(self, path: str | os.PathLike[str]) -> Path:
        """Write the conversation to a new notebook, ready to run.

        Messages become markdown cells, the answers' Python code blocks code cells (not run).

        Args:
            path: Where to write the ``.ipynb`` file.

        Returns:
            The path written.

        Raises:
            FileExistsError: ``path`` exists (a notebook is never overwritten).
        """
        return write_notebook(path, self.transcript, title=self._export_title())

    def _export_title(self) -> str:
        return f"Chat with {self.model_name}" if self.model_name else "Chat"


def chat(model: ChatEngine | str | os.PathLike[str], **options: Any) -> ChatWidget:
    """Open a chat widget on a model, a profile or an engine in one line.

    A name (a registered model or a profile, see :func:`mlxnb.profile`), a local directory or
    a Hugging Face repo id goes through the kernel's model pool: it starts loading in the
    background while the widget shows the progress (and the error in the chat if loading
    fails), and the picker in the header offers the pool's other models and profiles.

    Args:
        model: A model or profile name, a local model directory, a Hugging Face repo id, or an
            engine.
        **options: Passed to :class:`ChatWidget` (``system``, ``tools``, ``models``,
            ``truncate``…); ``resume=conversation_id`` brings back a saved conversation
            (:func:`mlxnb.conversations` lists them), even from before a kernel restart.

    Returns:
        The widget (display it as the cell's last expression).

    Raises:
        ModelNotFoundError: A bare name the pool does not know (the message lists the names).
    """
    if isinstance(model, str | os.PathLike):
        return ChatWidget(pooled(model, options.pop("pool", None) or default_pool()), **options)
    return ChatWidget(model, **options)
