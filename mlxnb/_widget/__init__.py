"""The widget family: the anywidget chat view and the op protocol it speaks to the browser."""

from mlxnb._widget.widget import ChatWidget, chat

__all__ = ["ChatWidget", "chat"]
