"""What every benchmark writes with ``--json PATH``: one JSON object, the same layout for all.

A bench script builds its report in three steps::

    report = new_report("engine", args)      # bench name, start time, machine, settings
    with human_output(args.json):            # the printed table (to stderr when JSON goes to -)
        results = run(args)
    write_report(report, results, args.json) # no-op when --json was not given

``results`` holds the raw per-run (or per-pair) numbers under ``"runs"`` and one entry per
printed figure under ``"figures"`` (see :func:`figure`). ``bench/run_all.py`` gathers the
reports into one file and ``bench/summarize.py`` turns a file into a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = 1
STDOUT = "-"


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    """The checked-out commit, with ``+dirty`` when the tree has changes (None outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: OS, Python, MLX and its default device, CPU count.

    Returns:
        A JSON-ready dict. ``mlx``/``mlx_device`` are None when MLX cannot be imported.
    """
    try:
        import mlx.core as mx

        mlx_version: str | None = str(mx.__version__)
        device: str | None = mx.default_device().type.name  # "cpu" or "gpu"
    except Exception:  # a report must still be written on a machine without a working MLX
        mlx_version = device = None
    try:
        import mlxnb

        mlxnb_version: str | None = mlxnb.__version__
    except Exception:
        mlxnb_version = None
    return {
        "platform": platform.platform(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "mlx": mlx_version,
        "mlx_device": device,
        "cpu_count": os.cpu_count(),
        "mlxnb": mlxnb_version,
        "commit": _git_commit(),
        "ld_preload": os.environ.get("LD_PRELOAD") or None,
    }


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--json PATH`` (``-`` or a bare ``--json`` for stdout) to a bench's parser."""
    parser.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        default=None,
        metavar="PATH",
        help="write the results as one JSON object to PATH ('-' or no PATH: stdout; "
        "the table then goes to stderr)",
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key != "json"
    }


def new_report(bench: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start a bench's report: its name, start time, machine and the arguments it ran with.

    Args:
        bench: Short name of the benchmark (``"engine"``, ``"server"``, ...).
        args: The parsed command line; every argument but ``--json`` is recorded.

    Returns:
        The report without ``"results"``; :func:`write_report` adds them.
    """
    return {
        "schema": SCHEMA,
        "bench": bench,
        "started_at": now_iso(),
        "machine": machine_info(),
        "settings": _settings(args),
    }


def summary(values: Iterable[float]) -> dict[str, float | int | None]:
    """Median, min, max, spread (max - min, in the values' unit) and count of ``values``."""
    data = [float(v) for v in values]
    if not data:
        return {"median": None, "min": None, "max": None, "spread": None, "n": 0}
    low, high = min(data), max(data)
    return {
        "median": statistics.median(data),
        "min": low,
        "max": high,
        "spread": high - low,
        "n": len(data),
    }


def figure(
    label: str,
    values: Iterable[float],
    *,
    unit: str,
    value: float | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """One printed number with the raw values behind it and their summary.

    Args:
        label: What the number is, as the table calls it.
        values: The per-run (or per-pair) values, in ``unit``.
        unit: ``"tok/s"``, ``"ms"``, ``"s"``, ``"x"`` (a ratio), ...
        value: The number the table prints, when it is not the median of ``values`` (e.g. a
            ratio of medians, or a worst case); defaults to the median.
        target: The target the project states for it (``">= 0.97"``), if any.

    Returns:
        ``{"label", "unit", "value", "target", "values", "median", "min", "max", "spread",
        "n"}``.
    """
    data = [float(v) for v in values]
    stats = summary(data)
    return {
        "label": label,
        "unit": unit,
        "value": stats["median"] if value is None else float(value),
        "target": target,
        "values": data,
        **stats,
    }


@contextlib.contextmanager
def human_output(json_path: str | None) -> Iterator[None]:
    """Send ``print`` output to stderr while JSON is bound for stdout, so stdout stays JSON."""
    if json_path != STDOUT:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (they are not valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


COMPACT_OVER = 200_000
"""Characters of indented JSON past which a report is written compact: long runs' reports
(160 rounds with per-run figures) are ~1 MB indented, and the repository travels to the GPU
machine within 64 MiB."""


def dump(data: dict[str, Any], path: str | Path) -> None:
    """Write ``data`` as JSON to ``path`` (``-``: stdout), creating parent folders: indented,
    or compact past :data:`COMPACT_OVER` characters."""
    finite = _finite(data)
    text = json.dumps(finite, indent=2, ensure_ascii=False, default=str) + "\n"
    if len(text) > COMPACT_OVER:
        text = json.dumps(finite, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
    if str(path) == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def write_report(
    report: dict[str, Any],
    results: dict[str, Any] | None,
    json_path: str | None,
    *,
    skipped: str | None = None,
) -> None:
    """Finish ``report`` with ``results`` and write it, if ``--json`` was given.

    Args:
        report: From :func:`new_report`.
        results: ``{"runs": ..., "figures": {key: figure(...)}, ...}``; None when skipped.
        json_path: The ``--json`` argument (None: nothing is written).
        skipped: Why the bench did not run, when it did not.
    """
    report["finished_at"] = now_iso()
    report["results"] = results if results is not None else {}
    if skipped is not None:
        report["skipped"] = skipped
    if json_path is not None:
        dump(report, json_path)
