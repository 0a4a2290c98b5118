"""The widget's saved conversations: the Recent list, and a resumed conversation's transcript.

A conversation saved by a chat widget carries the widget's transcript (thinking and tool panes as
drawn); one saved from Python code has only its messages, so its entries are drawn again from
its turns, through the same :class:`~mlxnb._widget.protocol.OpRecorder` a live turn uses.
"""

from __future__ import annotations

import logging
from typing import Any

from mlxnb._chat import ChatTurn, Conversation, RoundStart
from mlxnb._ids import new_message_id
from mlxnb._widget.protocol import Batcher, OpRecorder
from mlxnb.events import ContentDelta, ThinkingDelta

_log = logging.getLogger(__name__)
RECENT = 20
"""How many conversations the Recent menu offers."""


def recent_list(conversation: Conversation, limit: int = RECENT) -> list[dict[str, Any]]:
    """The newest saved conversations for the menu: id, title, model, turns, updated_at."""
    log = conversation.history_log
    if log is None or log.closed:
        return []
    return [
        {key: row[key] for key in ("title", "model", "turns", "updated_at")}
        | {"id": row["conversation_id"]}
        for row in log.saved_conversations.recent(limit)
    ]


def save_quietly(conversation: Conversation, transcript: list[dict[str, Any]]) -> None:
    """Save the history with the widget's transcript; a failure is logged, never raised."""
    try:
        conversation.save(transcript)
    except Exception:  # the turn has finished; a full disk must not break the widget
        _log.exception("could not save conversation %s", conversation.conversation_id)


def transcript_of(conversation: Conversation, model: str) -> list[dict[str, Any]]:
    """The widget's transcript of a resumed conversation: as saved, or drawn from its turns."""
    saved = conversation.saved_transcript
    if len(saved) == len(conversation.turns):
        return saved
    return [entry_of(turn, model) for turn in conversation.turns]


def entry_of(turn: ChatTurn, model: str) -> dict[str, Any]:
    """One transcript entry for a finished turn: its rounds' thinking, text, calls and results."""
    recorder = OpRecorder(new_message_id(), turn.user, Batcher(lambda ops: None, interval=0))
    recorder.turn["model"] = model
    results = {result.call_id: result for result in turn.tool_results}
    for number, round_ in enumerate(turn.rounds):
        recorder.add(RoundStart(number))
        if round_.reasoning:
            recorder.add(ThinkingDelta(round_.reasoning))
        if round_.content:
            recorder.add(ContentDelta(round_.content))
        for call in round_.tool_calls:
            recorder.add(call)
        for call in round_.tool_calls:
            if call.id in results:
                recorder.add(results[call.id])
    return recorder.finish(turn)
