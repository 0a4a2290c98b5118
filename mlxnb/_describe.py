"""Compact, bounded text descriptions of notebook values, for a model to read.

A chat message that mentions ``@df`` gets a description of the kernel's ``df`` instead of the
value itself: a pandas DataFrame's shape, column types and first rows; a Series' length,
type and first values; an array's shape and dtype (numpy, MLX, or anything with ``shape`` and
``dtype``; values are never read, so an MLX array is never evaluated); a function's or class'
signature and docstring; a matplotlib figure's size and axes (the figure itself goes along as an
image when the model can see images); anything else a bounded ``repr``. Every description is
cut at ``max_chars`` with a marker, so a huge value costs the prompt a bounded amount.

A leaf: it imports nothing of mlxnb's, and pandas or matplotlib only when the value is theirs.
"""

from __future__ import annotations

import inspect
import reprlib
import sys
from dataclasses import dataclass
from typing import Any, Final

MAX_CHARS: Final = 2000
"""Most characters one description may have."""
HEAD_ROWS: Final = 5
MAX_COLUMNS: Final = 30
DOC_CHARS: Final = 800
CUT: Final = "… [cut]"

_REPR = reprlib.Repr()
_REPR.maxstring = 400
_REPR.maxother = 400
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 20
_REPR.maxlevel = 3


@dataclass(frozen=True)
class Description:
    """What a mention of one kernel variable adds to a message.

    Attributes:
        name: The variable's name.
        kind: A short label for people (``"DataFrame 3x2"``, ``"function"``, ``"int"``).
        text: What the model reads.
        figure: The matplotlib figure itself, for a model that can see images; else None.
    """

    name: str
    kind: str
    text: str
    figure: Any = None


def cut(text: str, max_chars: int) -> str:
    """``text`` whole if it fits in ``max_chars``, else its start and a marker."""
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - len(CUT))] + CUT


def _module_of(value: object) -> str:
    return type(value).__module__ or ""


def _is_instance(value: object, module: str, *names: str) -> bool:
    """``isinstance`` against a library's classes, without importing the library."""
    loaded = sys.modules.get(module)
    if loaded is None:
        return False
    types = tuple(t for name in names if isinstance(t := getattr(loaded, name, None), type))
    return bool(types) and isinstance(value, types)


def kind_of(value: object) -> str:
    """A short label of what a value is, cheap enough to show beside every name."""
    if _is_instance(value, "pandas", "DataFrame"):
        rows, columns = value.shape  # type: ignore[attr-defined]
        return f"DataFrame {rows}x{columns}"
    if _is_instance(value, "pandas", "Series"):
        return f"Series ({len(value)})"  # type: ignore[arg-type]
    if _is_figure(value):
        return "Figure"
    if _is_array(value):
        shape = "x".join(str(n) for n in _shape(value)) or "scalar"
        return f"{type(value).__name__} {shape}"
    if inspect.isclass(value):
        return "class"
    if inspect.isroutine(value):
        return "function"
    return type(value).__name__


def describe(name: str, value: object, *, max_chars: int = MAX_CHARS) -> Description:
    """Describe one value compactly (never more than ``max_chars`` characters of text).

    Args:
        name: The name the value goes by (it heads the description).
        value: The value.
        max_chars: Most characters of the description.

    Returns:
        The description; ``figure`` is set for a matplotlib figure.
    """
    figure = None
    if _is_instance(value, "pandas", "DataFrame"):
        text = _dataframe(name, value)
    elif _is_instance(value, "pandas", "Series"):
        text = _series(name, value)
    elif _is_figure(value):
        text, figure = _figure(name, value), value
    elif _is_array(value):
        text = _array(name, value)
    elif inspect.isclass(value) or inspect.isroutine(value):
        text = _callable(name, value)
    else:
        text = f"{name}: {_type_name(value)} = {_safe_repr(value)}"
    return Description(name, kind_of(value), cut(text, max_chars), figure)


def _type_name(value: object) -> str:
    module = _module_of(value)
    qualname = type(value).__qualname__
    return qualname if module in ("builtins", "__main__", "") else f"{module}.{qualname}"


def _safe_repr(value: object) -> str:
    try:
        return _REPR.repr(value)
    except Exception as exc:  # a broken __repr__ must not break the message
        return f"<{type(value).__name__}: repr failed with {type(exc).__name__}>"


def _dataframe(name: str, frame: Any) -> str:
    rows, columns = frame.shape
    lines = [f"{name}: pandas DataFrame, {rows} rows, {columns} columns"]
    dtypes = list(frame.dtypes.items())
    lines.append("columns (dtype):")
    lines.extend(f"  {column}: {dtype}" for column, dtype in dtypes[:MAX_COLUMNS])
    if len(dtypes) > MAX_COLUMNS:
        lines.append(f"  … and {len(dtypes) - MAX_COLUMNS} more columns")
    if rows:
        shown = min(rows, HEAD_ROWS)
        lines.append(f"first {shown} rows:" if shown < rows else "rows:")
        head = frame.head(HEAD_ROWS).to_string(max_cols=12, max_colwidth=40, show_dimensions=False)
        lines.append(head)
    return "\n".join(lines)


def _series(name: str, series: Any) -> str:
    title = f" {series.name!r}" if series.name is not None else ""
    lines = [f"{name}: pandas Series{title}, {len(series)} values, dtype {series.dtype}"]
    if len(series):
        shown = min(len(series), HEAD_ROWS)
        lines.append(f"first {shown} values:" if shown < len(series) else "values:")
        lines.append(series.head(HEAD_ROWS).to_string(max_rows=HEAD_ROWS))
    return "\n".join(lines)


def _is_array(value: object) -> bool:
    if isinstance(value, type):
        return False
    try:
        shape, dtype = value.shape, value.dtype  # type: ignore[attr-defined]
    except Exception:
        return False
    return isinstance(shape, tuple | list) and dtype is not None


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in value.shape)


def _array(name: str, array: Any) -> str:
    module = _module_of(array).split(".")[0] or "array"
    library = {"numpy": "numpy array", "mlx": "MLX array"}.get(module, f"{module} array")
    dtype = str(array.dtype).removeprefix("mlx.core.")
    return f"{name}: {library}, shape {_shape(array)}, dtype {dtype}"


def _callable(name: str, value: Any) -> str:
    label = "class" if inspect.isclass(value) else "function"
    own_name = getattr(value, "__name__", name)
    lines = [f"{name}: {label} {own_name}{_signature(value)}"]
    doc = inspect.getdoc(value)
    if doc and not (inspect.isclass(value) and doc == inspect.getdoc(object)):
        lines.append(f'"""{cut(doc, DOC_CHARS)}"""')
    return "\n".join(lines)


def _signature(value: Any) -> str:
    try:  # string annotations (``from __future__ import annotations``) read as written
        return str(inspect.signature(value, eval_str=True))
    except Exception:
        try:
            return str(inspect.signature(value))
        except (TypeError, ValueError):
            return "(…)"


def _is_figure(value: object) -> bool:
    return _is_instance(value, "matplotlib.figure", "Figure")


def _figure(name: str, figure: Any) -> str:
    width, height = (round(float(v) * float(figure.dpi)) for v in figure.get_size_inches())
    axes = list(figure.get_axes())
    lines = [f"{name}: matplotlib figure, {width}x{height} px, {len(axes)} axes"]
    suptitle = getattr(figure, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        lines.append(f"title: {suptitle.get_text()!r}")
    for index, ax in enumerate(axes[:8]):
        labels = [
            f"{what} {text!r}"
            for what, text in (
                ("title", ax.get_title()),
                ("x", ax.get_xlabel()),
                ("y", ax.get_ylabel()),
            )
            if text
        ]
        artists = len(ax.lines) + len(ax.collections) + len(ax.patches) + len(ax.images)
        lines.append(f"  axes {index + 1}: {', '.join(labels) or 'no labels'}; {artists} artists")
    return "\n".join(lines)
