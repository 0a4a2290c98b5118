"""Audit rows as pandas DataFrames: explicit dtypes, exports that round-trip, summaries."""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import pandas_dtype

from mlxnb._audit.record import COLUMN_NAMES, COLUMNS, TIME_FORMAT, TurnRecord
from mlxnb.errors import AuditError

DTYPES: dict[str, str] = {column.name: column.dtype for column in COLUMNS}
"""The pandas dtype of every audit column."""
STRING = pd.StringDtype()
_PANDAS_DTYPES = {name: pandas_dtype(dtype) for name, dtype in DTYPES.items()}
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (re-entrant, thread-safe) while building a frame.

    A 100 000-row read allocates millions of objects and no reference cycles; with the collector
    on, those allocations set off full collections that scan every object in the kernel (in the
    benchmark this made reads 2x slower).
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


class FrameBuilder:
    """A typed audit frame built from rows that arrive in batches.

    Each batch becomes typed column pieces at once (numbers as NumPy arrays, text as Arrow
    arrays where pandas' strings are Arrow-backed), so only one batch's Python objects are alive
    at a time; :meth:`build` joins the pieces.
    """

    def __init__(self) -> None:
        self._pieces: list[list[Any]] = [[] for _ in COLUMNS]

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Add stored rows (tuples in column order)."""
        if rows:
            self.add_columns(list(zip(*rows, strict=True)))

    def add_columns(self, columns: Sequence[Sequence[Any]]) -> None:
        """Add rows given as one sequence of plain Python values per column, in column order."""
        for column, pieces, values in zip(COLUMNS, self._pieces, columns, strict=True):
            pieces.append(_piece(column.kind, values))

    def build(self) -> pd.DataFrame:
        """The frame of every row added, with the audit dtypes."""
        data: dict[str, Any] = {}
        for column, pieces in zip(COLUMNS, self._pieces, strict=True):
            data[column.name] = _joined(column.kind, column.dtype, pieces)
        frame: pd.DataFrame = pd.DataFrame(data, columns=list(COLUMN_NAMES))
        return frame


def _arrow_strings() -> bool:
    return STRING.storage == "pyarrow"


def _piece(kind: str, values: Sequence[Any]) -> Any:
    """One batch of one column, converted while its Python objects are still in the CPU's cache."""
    if kind == "time":
        return np.asarray(values, dtype=object)
    if kind.startswith("str"):
        if _arrow_strings():
            import pyarrow as pa

            try:
                return pa.array(values, type=pa.large_string())
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass  # not all text: pandas converts (or refuses) it value by value
        return pd.array(np.asarray(values, dtype=object), dtype=STRING)
    # Numbers go through NumPy (``None`` becomes NaN, then NA): about twice as fast as letting
    # pandas infer from lists.
    return np.asarray(values, dtype=np.int64 if kind == "int" else np.float64)


def _joined(kind: str, dtype: str, pieces: list[Any]) -> Any:
    if kind == "time":
        text = np.concatenate(pieces) if pieces else np.array([], dtype=object)
        return pd.to_datetime(text, format="ISO8601", utc=True).astype(dtype).array
    if kind.startswith("str"):
        if not pieces:
            return pd.array([], dtype=STRING)
        if not any(isinstance(piece, pd.api.extensions.ExtensionArray) for piece in pieces):
            import pyarrow as pa

            return pd.arrays.ArrowStringArray(pa.chunked_array(pieces, type=pa.large_string()))
        typed = [pd.array(piece, dtype=STRING) for piece in pieces]
        return type(typed[0])._concat_same_type(typed)
    numbers: Any = np.concatenate(pieces) if pieces else np.array([], dtype=np.float64)
    return pd.array(numbers, dtype=dtype)


def frame_from_columns(values: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """A typed frame from plain Python values per column (``started_at`` as ISO text)."""
    builder = FrameBuilder()
    builder.add_columns([values[name] for name in COLUMN_NAMES])
    return builder.build()


def frame_from_rows(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """A typed frame from stored rows (tuples in column order)."""
    builder = FrameBuilder()
    builder.add_rows(rows)
    return builder.build()


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly the audit columns, in order, cast to the audit dtypes.

    Columns added by a later schema version than the frame's (an export made by an older mlxnb)
    are filled with their defaults.

    Raises:
        ValueError: A column of the first schema version is missing.
    """
    missing = [c.name for c in COLUMNS if c.since == 1 and c.name not in frame.columns]
    if missing:
        raise AuditError(f"not an mlxnb audit table: missing columns {missing}")
    data: dict[str, Any] = {}
    for column in COLUMNS:
        if column.name not in frame.columns:
            filled: list[Any] = [column.default] * len(frame)
            data[column.name] = pd.Series(filled, dtype=_PANDAS_DTYPES[column.name]).array
            continue
        series = frame[column.name]
        if column.kind == "time" and not isinstance(series.dtype, pd.DatetimeTZDtype):
            series = pd.to_datetime(series, format="ISO8601", utc=True)
        data[column.name] = series.astype(_PANDAS_DTYPES[column.name]).array
    conformed: pd.DataFrame = pd.DataFrame(data, columns=list(COLUMN_NAMES))
    return conformed


def _python(value: Any, kind: str) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    if kind == "time":
        return pd.Timestamp(value).to_pydatetime()
    return str(value)


def records_from_frame(frame: pd.DataFrame) -> Iterator[TurnRecord]:
    """The rows of an audit frame as :class:`TurnRecord` objects."""
    frame = conform(frame)
    columns = [frame[c.name].astype(object).tolist() for c in COLUMNS]
    kinds = [column.kind for column in COLUMNS]
    for values in zip(*columns, strict=True):
        converted = (_python(v, k) for v, k in zip(values, kinds, strict=True))
        yield TurnRecord(**dict(zip(COLUMN_NAMES, converted, strict=True)))


def export_format(path: Path) -> str:
    """The export format named by ``path``'s suffix.

    Raises:
        ValueError: The suffix is not ``.parquet``, ``.csv``, ``.jsonl`` or ``.ndjson``.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AuditError(f"cannot export to {path.name!r}: use one of {sorted(FORMATS)}")
    return fmt


def write_export(
    path: Path, frame: Callable[[], pd.DataFrame], rows: Callable[[], Iterable[Sequence[Any]]]
) -> Path:
    """Write an export atomically (a temporary file, then a rename).

    Args:
        path: Target file; its suffix picks the format.
        frame: Builds the typed frame (parquet, CSV).
        rows: Yields stored rows (JSONL, written without pandas so floats stay exact).

    Returns:
        ``path``.
    """
    fmt = export_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "parquet":
            frame().to_parquet(tmp, index=False)
        elif fmt == "csv":
            frame().to_csv(tmp, index=False, date_format=TIME_FORMAT)
        else:
            with open(tmp, "w", encoding="utf-8") as out:
                for row in rows():
                    out.write(
                        json.dumps(dict(zip(COLUMN_NAMES, row, strict=True)), ensure_ascii=False)
                    )
                    out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_export(path: str | Path) -> pd.DataFrame:
    """Read an audit export (parquet, CSV or JSONL, by suffix) with the audit dtypes.

    Args:
        path: A file written by :meth:`AuditLog.export` (of this mlxnb or an older one: columns
            added since read as their defaults).

    Returns:
        The rows, with the same columns and dtypes as :meth:`AuditLog.to_pandas`.

    Raises:
        ValueError: Unknown suffix, or the file lacks audit columns.
    """
    path = Path(path)
    fmt = export_format(path)
    if fmt == "parquet":
        return conform(pd.read_parquet(path))
    if fmt == "csv":
        # Only the nullable columns read "" as null: content "" stays "", and "NA" stays text.
        # Floats are parsed by Python, not pandas: pandas' CSV float parser is not exact in
        # every version (``0.9099999999999999`` came back as ``0.91`` on pandas 3.0).
        as_text = {c.name for c in COLUMNS if c.kind in ("time", "float", "float?")}
        frame = pd.read_csv(
            path,
            dtype={c.name: ("string" if c.name in as_text else c.dtype) for c in COLUMNS},
            keep_default_na=False,
            na_values={c.name: [""] for c in COLUMNS if c.nullable},
        )
        for spec in COLUMNS:
            if spec.kind.startswith("float") and spec.name in frame.columns:
                text = frame[spec.name].astype(object)
                numbers: Any = [None if value is pd.NA else float(value) for value in text]
                frame[spec.name] = pd.array(numbers, dtype=spec.dtype)
        return conform(frame)
    values: dict[str, list[Any]] = {name: [] for name in COLUMN_NAMES}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            try:
                for spec, column in zip(COLUMNS, values.values(), strict=True):
                    column.append(
                        item[spec.name] if spec.since == 1 else item.get(spec.name, spec.default)
                    )
            except KeyError as exc:
                raise AuditError(f"{path}:{number}: missing audit column {exc}") from None
    return frame_from_columns(values)


SUMMARY_COLUMNS = (
    "turns",
    "errors",
    "cancelled",
    "duration_p50_s",
    "duration_p95_s",
    "ttft_p50_s",
    "generation_tps_mean",
    "prompt_tps_mean",
    "prompt_tokens",
    "completion_tokens",
)


def summarize(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per-group turn counts, latency percentiles, mean speeds and token totals.

    Args:
        frame: An audit frame.
        by: Columns to group by; empty for one row over everything.

    Returns:
        One row per group with :data:`SUMMARY_COLUMNS`.
    """
    keys = list(by) or ["all"]
    work = frame if by else frame.assign(all="all")
    work = work.assign(
        errors=(work["status"] == "error").astype("Int64"),
        cancelled=(work["status"] == "cancelled").astype("Int64"),
    )
    grouped = work.groupby(keys, dropna=False, sort=True)
    duration = grouped["duration_s"]
    result = pd.DataFrame(
        {
            "turns": grouped.size().astype("Int64"),
            "errors": grouped["errors"].sum(),
            "cancelled": grouped["cancelled"].sum(),
            "duration_p50_s": duration.quantile(0.5),
            "duration_p95_s": duration.quantile(0.95),
            "ttft_p50_s": grouped["time_to_first_token_s"].quantile(0.5),
            "generation_tps_mean": grouped["generation_tps"].mean(),
            "prompt_tps_mean": grouped["prompt_tps"].mean(),
            "prompt_tokens": grouped["prompt_tokens"].sum(),
            "completion_tokens": grouped["completion_tokens"].sum(),
        }
    )
    dtypes = {name: ("Int64" if name in _COUNTS else "Float64") for name in SUMMARY_COLUMNS}
    typed: pd.DataFrame = result.astype(dtypes)
    return typed


_COUNTS = {"turns", "errors", "cancelled", "prompt_tokens", "completion_tokens"}
