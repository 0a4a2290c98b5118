"""Widget-test helpers: the ``script`` fixture's type, messages from the page, a comm tap.

The fake engine itself is public: :class:`mlxnb.testing.FakeEngine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Script = Callable[..., Callable[[], Mapping[str, Any]]]
"""``script(text, ...)``: a generation-options factory forcing one text per request."""


def from_page(widget: Any, content: dict[str, Any]) -> None:
    """Deliver a custom message the way ipywidgets does for one from the browser."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


class Wire:
    """Records what a widget puts on its comm (outside a kernel the comm is a DummyComm)."""

    def __init__(self, widget: Any) -> None:
        self.log: list[tuple[str, Any]] = []
        widget.comm.publish_msg = self._publish

    def _publish(self, msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
        if isinstance(data, dict) and data.get("method") == "custom":
            self.log.append(("custom", data["content"]))
        elif isinstance(data, dict) and data.get("method") == "update":
            self.log.append(("update", data["state"]))

    def customs(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [c for k, c in self.log if k == "custom" and (kind is None or c["type"] == kind)]

    def ops(self) -> list[list[Any]]:
        return [op for message in self.customs("ops") for op in message["ops"]]

    def updates(self, name: str) -> list[Any]:
        return [state[name] for k, state in self.log if k == "update" and name in state]
