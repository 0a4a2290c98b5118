"""Conversations that outlive the kernel: saving a chat's history and bringing it back.

:class:`SavedHistory` is a part of :class:`~mlxnb.Conversation`. After each finished turn the
whole history goes to the ``conversations`` table of the audit log's file
(:mod:`mlxnb._audit.conversations`); ``Conversation(engine, resume=id)`` reads it back in any
kernel, tool calls, tool results and thinking included, and the next turn goes on from there.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mlxnb._audit import AuditLog, default_path
from mlxnb._audit.conversations import SavedConversation, title_of
from mlxnb._chat_history import message_text
from mlxnb._chat_turn import ChatTurn
from mlxnb._images import Image
from mlxnb._tools import ToolResult
from mlxnb.errors import ConversationNotFoundError
from mlxnb.events import FinishReason, ToolCall, Turn, Usage

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

__all__ = ["SavedHistory", "conversations", "log_for"]

_log = logging.getLogger(__name__)
_default_logs: dict[Path | None, AuditLog] = {}
_default_lock = threading.Lock()


def _default_log() -> AuditLog:
    """This process's log at :func:`~mlxnb._audit.default_path` (opened once per path)."""
    path = default_path()
    with _default_lock:
        log = _default_logs.get(path)
        if log is None or log.closed:
            log = _default_logs[path] = AuditLog(path if path is not None else ":memory:")
        return log


def log_for(engine: object, save: AuditLog | bool) -> AuditLog | None:
    """Where a conversation on ``engine`` saves its history (``None``: nowhere).

    ``save`` is an :class:`AuditLog`, ``False`` (nowhere) or ``True``: the engine's own audit
    log (an engine made with ``audit=False`` saves nowhere), else the default one.
    """
    if isinstance(save, AuditLog):
        return save
    if not save:
        return None
    if hasattr(engine, "audit"):
        audit = engine.audit
        return audit if isinstance(audit, AuditLog) else None
    return _default_log()


def conversations(limit: int | None = 20, *, audit: AuditLog | None = None) -> pd.DataFrame:
    """Saved conversations, newest first; bring one back with ``mlxnb.chat(model, resume=id)``.

    Args:
        limit: How many (``None`` for all).
        audit: The log whose file holds them (default: the default audit log,
            ``$MLXNB_AUDIT`` or the per-user data folder).

    Returns:
        Columns id, title (the first message), model, source, turns, created_at, updated_at.
    """
    return (audit or _default_log()).conversations(limit)


class SavedHistory:
    """Saving and resuming over the history a :class:`~mlxnb.Conversation` keeps."""

    conversation_id: str
    system: str | None
    source: str
    _messages: list[dict[str, Any]]
    _starts: list[int]
    _turns: list[ChatTurn]
    _history_log: AuditLog | None
    _transcript: list[dict[str, Any]]

    @property
    def engine(self) -> Any:
        raise NotImplementedError

    def _check_idle(self) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def resume(self, conversation_id: str) -> None:
        """Go on with a saved conversation instead: its history replaces this one's.

        This conversation's history stays saved under its own id.

        Raises:
            ConversationNotFoundError: No saved conversation has this id.
            ConversationBusyError: A turn is running.
        """
        self._check_idle()
        saved = self._load(conversation_id)  # a missing id changes nothing
        self.clear()
        self._restore(saved)

    @property
    def history_log(self) -> AuditLog | None:
        """Where the history is saved after each turn (``None``: nowhere, see ``save=``)."""
        return self._history_log

    @property
    def saved_transcript(self) -> list[dict[str, Any]]:
        """The chat widget's transcript saved with the history (a copy; may be empty)."""
        return copy.deepcopy(self._transcript)

    def save(self, transcript: list[dict[str, Any]] | None = None) -> bool:
        """Save the history now (it is saved after every finished turn anyway).

        Args:
            transcript: The chat widget's transcript, kept to redraw its panes on resume
                (default: the last one given).

        Returns:
            Whether it was written: not when saving is off (``save=False``, an engine without
            an audit log, or a log with ``log_content=False``) or there is no turn yet.
        """
        if transcript is not None:
            self._transcript = copy.deepcopy(transcript)
        log = self._history_log
        if log is None or log.closed or not self._starts:
            return False
        saved = SavedConversation(
            conversation_id=self.conversation_id,
            title=title_of(message_text(self._messages[self._starts[0]])),
            model=str(getattr(self.engine, "model_id", "")),
            source=self.source,
            messages=[_storable(message) for message in self._messages],
            turn_summaries=[_summary(turn) for turn in self._turns],
            transcript=self._transcript,
        )
        return log.saved_conversations.save(saved)

    def _autosave(self) -> None:
        try:
            self.save()
        except Exception:  # saving must never fail the turn that just finished
            _log.exception("could not save conversation %s", self.conversation_id)

    def _load(self, conversation_id: str) -> SavedConversation:
        log = self._history_log or _default_log()
        saved = log.saved_conversations.get(conversation_id)
        if saved is None:
            where = log.path or "the in-memory audit log"
            raise ConversationNotFoundError(
                f"no saved conversation {conversation_id!r} in {where} (see mlxnb.conversations())"
            )
        return saved

    def _restore(self, saved: SavedConversation) -> None:
        """Replace the (empty) history with a saved one."""
        self.conversation_id = saved.conversation_id
        self._messages = copy.deepcopy(saved.messages)
        self._starts[:] = [i for i, m in enumerate(self._messages) if m.get("role") == "user"]
        ends = [*self._starts[1:], len(self._messages)]
        summaries = saved.turn_summaries + [{}] * (len(self._starts) - len(saved.turn_summaries))
        self._turns[:] = [
            _chat_turn(self._messages[start:end], summary)
            for start, end, summary in zip(self._starts, ends, summaries, strict=False)
        ]
        first = self._messages[0] if self._messages else {}
        if first.get("role") == "system":
            self.system = message_text(first)
        self._transcript = copy.deepcopy(saved.transcript)


def _storable(message: dict[str, Any]) -> dict[str, Any]:
    """A message as JSON can hold it: images (checked ``Image`` values) as ``data:`` URLs."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = [
        {**part, "image": part["image"].data_url()}
        if isinstance(part, dict) and isinstance(part.get("image"), Image)
        else part
        for part in content
    ]
    return {**message, "content": parts}


def _summary(turn: ChatTurn) -> dict[str, Any]:
    return {
        "finish_reason": turn.finish_reason,
        "error": turn.error,
        "seconds": turn.seconds,
        "thinking_seconds": turn.thinking_seconds,
    }


def _tool_call(index: int, call: dict[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {"_raw": arguments}
    return ToolCall(index, str(call.get("id", "")), str(function.get("name", "")), arguments)


def _chat_turn(messages: list[dict[str, Any]], summary: dict[str, Any]) -> ChatTurn:
    """A finished chat turn rebuilt from its messages (a user message, then what followed)."""
    reason: FinishReason = summary.get("finish_reason") or "stop"
    rounds: list[Turn] = []
    results: list[ToolResult] = []
    calls: dict[str, ToolCall] = {}
    for message in messages[1:]:
        if message.get("role") == "assistant":
            tool_calls = tuple(
                _tool_call(i, c) for i, c in enumerate(message.get("tool_calls") or ())
            )
            calls.update((call.id, call) for call in tool_calls)
            rounds.append(
                Turn(
                    content=message_text(message),
                    reasoning=str(message.get("reasoning_content") or ""),
                    tool_calls=tool_calls,
                    tool_call_errors=(),
                    finish_reason="tool_calls" if tool_calls else "stop",
                    usage=Usage(),
                )
            )
        elif message.get("role") == "tool":
            call = calls.get(str(message.get("tool_call_id", "")))
            results.append(
                ToolResult(
                    call_id=str(message.get("tool_call_id", "")),
                    name=str(message.get("name", call.name if call else "")),
                    arguments=call.arguments if call else {},
                    content=message_text(message),
                )
            )
    if rounds:
        rounds[-1] = replace(rounds[-1], finish_reason=reason)
    return ChatTurn(
        user=message_text(messages[0]),
        content=rounds[-1].content if rounds else "",
        reasoning="".join(turn.reasoning for turn in rounds),
        rounds=tuple(rounds),
        tool_results=tuple(results),
        finish_reason=reason,
        usage=Usage(),
        seconds=float(summary.get("seconds") or 0.0),
        thinking_seconds=summary.get("thinking_seconds"),
        error=summary.get("error"),
    )
