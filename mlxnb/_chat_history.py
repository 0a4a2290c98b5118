"""Changing a conversation's past: undo, edit-and-resend (the old branch kept), continue.

:class:`HistoryEdits` is a part of :class:`~mlxnb.Conversation`: it cuts or reopens the
history, then hands the turn to the conversation's own loop (``_stream_message``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from mlxnb._chat_turn import ChatEvent, ChatTurn
from mlxnb.errors import EmptyHistoryError, InvalidRequestError


class HistoryEdits:
    """Undo, edit and continue over the history a :class:`~mlxnb.Conversation` keeps."""

    _messages: list[dict[str, Any]]
    _starts: list[int]  # where each turn's user message sits in _messages
    _turns: list[ChatTurn]
    _branches: list[list[dict[str, Any]]]
    _skip: int

    def _check_idle(self) -> None:
        raise NotImplementedError

    def _stream_message(
        self,
        message: dict[str, Any] | None,
        enable_thinking: bool | None,
        resume: ChatTurn | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        raise NotImplementedError

    @property
    def history_branches(self) -> list[list[dict[str, Any]]]:
        """Histories that an edit replaced (copies, oldest first).

        Each is the whole OpenAI-style history as it was just before :meth:`stream_edit` cut
        it at the edited message and answered again.
        """
        return copy.deepcopy(self._branches)

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

    async def stream_edit(
        self, index: int, text: str, *, enable_thinking: bool | None = None
    ) -> AsyncIterator[ChatEvent]:
        """Edit turn ``index``'s user message and stream a new answer; later turns are replaced.

        The history as it was goes to :attr:`history_branches` first. Images sent with the
        original message stay with it.

        Args:
            index: Which turn (0 for the first; negative counts from the end).
            text: The new text of its user message.
            enable_thinking: Overrides the conversation's default for this turn.

        Raises:
            InvalidRequestError: There is no turn ``index``.
        """
        self._check_idle()
        if not -len(self._starts) <= index < len(self._starts):
            raise InvalidRequestError(f"there is no turn {index} to edit ({len(self._starts)})")
        index %= len(self._starts)
        self._branches.append(copy.deepcopy(self._messages))
        start = self._starts[index]
        message = edited(self._messages[start], text)
        del self._messages[start:], self._starts[index:], self._turns[index:]
        self._skip = min(self._skip, max(len(self._starts) - 1, 0))
        async with contextlib.aclosing(self._stream_message(message, enable_thinking)) as events:
            async for event in events:
                yield event

    async def edit(self, index: int, text: str, *, enable_thinking: bool | None = None) -> ChatTurn:
        """Edit turn ``index``'s user message; return the new answer (see :meth:`stream_edit`)."""
        return await last_turn(self.stream_edit(index, text, enable_thinking=enable_thinking))

    async def stream_continue(
        self, *, enable_thinking: bool | None = None
    ) -> AsyncIterator[ChatEvent]:
        """Carry on the last answer where ``max_tokens`` cut it, in the same assistant message.

        The prompt ends with the answer so far (the chat template's ``continue_final_message``:
        no new user turn), and the new text joins it: the history keeps one assistant message,
        and the last turn is replaced by the joined one (its ``finish_reason`` is the new one).

        Raises:
            InvalidRequestError: The last turn did not stop at ``max_tokens``.
        """
        self._check_idle()
        if not self._turns or self._turns[-1].finish_reason != "length":
            raise InvalidRequestError("only an answer cut short by max_tokens can be continued")
        inner = self._stream_message(None, enable_thinking, resume=self._turns[-1])
        async with contextlib.aclosing(inner) as events:
            async for event in events:
                yield event

    async def continue_answer(self, *, enable_thinking: bool | None = None) -> ChatTurn:
        """Continue the last answer cut by ``max_tokens``; returns the joined turn."""
        return await last_turn(self.stream_continue(enable_thinking=enable_thinking))


async def last_turn(events: AsyncIterator[ChatEvent]) -> ChatTurn:
    async for event in events:
        if isinstance(event, ChatTurn):
            return event
    raise AssertionError("stream ended without a ChatTurn")  # pragma: no cover


def edited(message: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A user message with new text; its images (if any) stay, before the text."""
    content = message.get("content")
    if isinstance(content, list):
        kept = [p for p in content if not (isinstance(p, Mapping) and p.get("type") == "text")]
        return {**message, "content": [*kept, {"type": "text", "text": text}]}
    return {**message, "content": text}


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return "" if content is None else str(content)
