"""The chat widget on an endpoint: thinking, a tool call and its result, streamed from a server."""

from __future__ import annotations

from typing import Any

from remote_scripts import TOOL_TURN, add

import mlxnb
from mlxnb._widget import ChatWidget


def ops_of(widget: ChatWidget) -> list[list[Any]]:
    """Tap the ops the widget sends to the page (outside a kernel its comm is a dummy)."""
    seen: list[list[Any]] = []

    def publish(msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
        custom = isinstance(data, dict) and data.get("method") == "custom"
        if custom and data["content"].get("type") == "ops":
            seen.extend(data["content"]["ops"])

    widget.comm.publish_msg = publish
    return seen


def send(widget: ChatWidget, text: str) -> None:
    """Deliver the page's ``send`` message the way ipywidgets does."""
    content = {"type": "send", "text": text}
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


async def test_the_widget_streams_thinking_and_runs_the_tool(remote: mlxnb.Endpoint) -> None:
    widget = ChatWidget(remote, tools=[add], generation_options={"max_tokens": 200})
    try:
        ops = ops_of(widget)
        assert widget.status == "ready" and widget.model == remote.model_id
        send(widget, TOOL_TURN)
        assert widget._task is not None
        turn = await widget._task
        assert turn is not None and turn.content == "Result: 5"
        kinds = [op[0] for op in ops]
        assert "think" in kinds and "tool_call" in kinds
        thinking = "".join(op[1] for op in ops if op[0] == "think")
        assert "I should add them." in thinking
        assert widget.transcript[-1]["status"] == "done"
    finally:
        widget.close()
