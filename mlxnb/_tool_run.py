"""Running a tool's function: plain ``def`` in its own thread, output captured, rich results shown.

A plain function runs in a daemon thread of its own (tools are user code, never MLX), so the
caller's event loop stays free: Stop cancels the awaiting coroutine at once, and the thread's
late result is dropped. What the function prints is captured for its tool pane; a returned
DataFrame becomes a small table and a matplotlib figure a PNG, both bounded in size. The text
the model reads stays textual (:func:`result_value_text`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import inspect
import io
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

MAX_STDOUT = 8_000
"""Characters of a tool's printed output kept for its pane (the rest is cut with a marker)."""
MAX_ROWS = 20
MAX_COLUMNS = 12
MAX_CELL = 80
MAX_PNG_BYTES = 400_000
_FIGURE_DPI = (80, 50, 30)

_capture: contextvars.ContextVar[io.StringIO | None] = contextvars.ContextVar(
    "mlxnb_tool_stdout", default=None
)
_lock = threading.Lock()
_installed: list[Any] = []  # [proxy, the stream it replaced, users]


class _Stdout:
    """``sys.stdout`` while tools run: a tool's writes go to its buffer, all others pass on."""

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def write(self, text: str) -> int:
        buffer = _capture.get()
        if buffer is None:
            return self._target.write(text)
        return buffer.write(text)

    def flush(self) -> None:
        if _capture.get() is None:
            self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def _install() -> None:
    with _lock:
        if _installed and sys.stdout is _installed[0]:
            _installed[2] += 1
            return
        proxy = _Stdout(sys.stdout)
        _installed[:] = [proxy, sys.stdout, 1]
        sys.stdout = proxy


def _uninstall() -> None:
    with _lock:
        if not _installed:
            return
        _installed[2] -= 1
        if _installed[2] <= 0:
            if sys.stdout is _installed[0]:  # else someone replaced it since: leave theirs
                sys.stdout = _installed[1]
            _installed.clear()


class Outcome:
    """What a call gave: its value, what it printed, and how its pane shows the value."""

    def __init__(self, value: Any, stdout: str, display: dict[str, Any] | None) -> None:
        self.value = value
        self.stdout = stdout
        self.display = display


async def run_function(function: Callable[..., Any], arguments: Mapping[str, Any]) -> Outcome:
    """Call ``function(**arguments)``: ``async def`` on this loop, plain ``def`` in a thread.

    Cancelling the caller returns at once; a thread still running finishes on its own and its
    result is dropped. Exceptions from the function propagate.
    """
    buffer = io.StringIO()
    if inspect.iscoroutinefunction(function) or _is_async_callable(function):
        return await _on_loop(lambda: function(**arguments), buffer)
    _install()  # the thread uninstalls it when it ends: prints after a Stop stay captured
    outcome = await _in_thread(function, arguments, buffer)
    if inspect.isawaitable(outcome.value):  # a plain function that returned a coroutine
        awaitable = outcome.value
        return await _on_loop(lambda: awaitable, buffer)
    return outcome


async def _on_loop(start: Callable[[], Any], buffer: io.StringIO) -> Outcome:
    """Await a coroutine tool on this loop with its prints captured (its task's context)."""
    _install()
    token = _capture.set(buffer)
    try:
        value = start()
        if inspect.isawaitable(value):
            value = await value
    finally:
        _capture.reset(token)
        _uninstall()
    return Outcome(value, _cut(buffer.getvalue()), rich_display(value))


def _is_async_callable(function: Callable[..., Any]) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


async def in_thread(work: Callable[[], T], name: str = "mlxnb-tool") -> T:
    """Run ``work()`` in a daemon thread of its own and await its value (or its exception).

    Cancelling the awaiting coroutine returns at once; the thread finishes on its own and what
    it returns is dropped. A daemon thread never holds up the interpreter's exit.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile: the late result is dropped
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = work()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(settle, value, error)

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), name=name, daemon=True).start()
    return await future


async def _in_thread(
    function: Callable[..., Any], arguments: Mapping[str, Any], buffer: io.StringIO
) -> Outcome:
    def work() -> Outcome:
        _capture.set(buffer)
        try:
            value = function(**arguments)
            shown = None if inspect.isawaitable(value) else rich_display(value)
            return Outcome(value, _cut(buffer.getvalue()), shown)
        finally:
            _uninstall()

    return await in_thread(work, f"mlxnb-tool-{getattr(function, '__name__', 'call')}")


def _cut(text: str) -> str:
    if len(text) <= MAX_STDOUT:
        return text
    return text[:MAX_STDOUT] + f"\n… ({len(text) - MAX_STDOUT} more characters not shown)"


def rich_display(value: Any) -> dict[str, Any] | None:
    """How a tool pane shows a value: ``{"table": …}`` or ``{"image": data URL}``, else None."""
    module = type(value).__module__ or ""
    try:
        if module.startswith("pandas"):
            if hasattr(value, "to_frame") and not hasattr(value, "columns"):
                value = value.to_frame()
            if hasattr(value, "columns") and hasattr(value, "iloc"):
                return {"table": _table(value)}
        if module.startswith("matplotlib"):
            figure = value if hasattr(value, "savefig") else getattr(value, "figure", None)
            if figure is not None and hasattr(figure, "savefig"):
                png = _png(figure)
                if png is not None:
                    return {"image": "data:image/png;base64," + base64.b64encode(png).decode()}
    except Exception:  # showing a result must never fail the call
        return None
    return None


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _table(frame: Any) -> dict[str, Any]:
    rows, columns = frame.shape
    head = frame.iloc[:MAX_ROWS, :MAX_COLUMNS]
    return {
        "columns": [_short(c) for c in head.columns],
        "index": [_short(i) for i in head.index],
        "rows": [[_short(v) for v in row] for row in head.itertuples(index=False, name=None)],
        "shape": [int(rows), int(columns)],
    }


def _png(figure: Any) -> bytes | None:
    for dpi in _FIGURE_DPI:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        if buffer.tell() <= MAX_PNG_BYTES:
            return buffer.getvalue()
    return None


def result_value_text(value: Any) -> str | None:
    """The model's text for values that have a better one than JSON (tables, figures)."""
    module = type(value).__module__ or ""
    if module.startswith("pandas") and hasattr(value, "to_string"):
        text = value.to_string(max_rows=MAX_ROWS, max_cols=MAX_COLUMNS)
        return str(text)
    if module.startswith("matplotlib") and (
        hasattr(value, "savefig") or hasattr(getattr(value, "figure", None), "savefig")
    ):
        return "(a matplotlib figure, shown to the user)"
    return None
