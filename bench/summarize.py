"""Print a results file as a compact markdown table, for pasting into the README.

Reads what ``bench/run_all.py`` writes (or one bench's ``--json`` report) and prints one row
per figure: the value the bench's table prints, the median, spread (max - min) and count of
the runs behind it, and the target. A line above the table names the file, the time and the
machine, so every number in the README can be traced back to its file.

    python -m bench.summarize bench/results/latest.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HEADER = "| bench | figure | value | median | spread | n | target |"
RULE = "| --- | --- | --- | --- | --- | --- | --- |"


def number(value: float | None, unit: str = "") -> str:
    """``value`` to 4 significant digits with its unit (``x`` for ratios), or ``-``."""
    if value is None:
        return "-"
    text = f"{value:.4g}"
    if unit == "x":
        return f"{text}\N{MULTIPLICATION SIGN}"
    return f"{text} {unit}".rstrip()


def spread(fig: dict[str, Any]) -> str:
    """Max - min, and relative to the median in percent when that means something."""
    width, median = fig.get("spread"), fig.get("median")
    if width is None or fig.get("n", 0) < 2:
        return "-"
    text = number(width, fig.get("unit", ""))
    if median:
        text += f" ({100 * width / abs(median):.1f} %)"
    return text


def rows(report: dict[str, Any]) -> list[str]:
    """The table rows of one bench's report: one per figure, or one saying why there are none."""
    name = report.get("bench", "?")
    status = report.get("status", "skipped" if "skipped" in report else "ok")
    figures = (report.get("results") or {}).get("figures") or {}
    if status == "skipped":
        return [f"| {name} | **skipped**: {report.get('skipped')} | | | | | |"]
    if status != "ok":
        exit_status = report.get("exit_status")
        if not figures:
            why = report.get("error") or "see stderr_tail in the file"
            return [f"| {name} | **{status}** (exit {exit_status}): {why} | | | | | |"]
        name = f"{name} (**{status}**, exit {exit_status})"
    out = []
    for key, fig in figures.items():
        unit = fig.get("unit", "")
        cells = [
            name,
            fig.get("label", key),
            f"**{number(fig.get('value'), unit)}**",
            number(fig.get("median"), unit),
            spread(fig),
            str(fig.get("n", "")),
            (fig.get("target") or "").replace(">=", "≥").replace("<=", "≤"),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def source_line(path: str, data: dict[str, Any]) -> str:
    """Where the numbers come from: file, time, machine, MLX device, commit."""
    machine = data.get("machine") or {}
    parts = [
        f"`{path}`",
        str(data.get("started_at", "?")),
        f"{machine.get('platform', '?')}, {machine.get('cpu_count', '?')} CPUs",
        f"mlx {machine.get('mlx', '?')} on {machine.get('mlx_device', '?')}",
        f"commit {machine.get('commit', '?')}",
    ]
    if data.get("quick"):
        parts.append("**--quick run: plumbing check, not a measurement**")
    return "Source: " + "; ".join(parts)


def summarize(path: str, data: dict[str, Any]) -> str:
    """The markdown: a source line, then the table of every bench's figures."""
    reports = data.get("benches", [data])
    lines = [source_line(path, data), "", HEADER, RULE]
    for report in reports:
        lines.extend(rows(report))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="bench/results/latest.json")
    args = parser.parse_args(argv)
    try:
        data = json.loads(Path(args.path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"cannot read {args.path}: {error}", file=sys.stderr)
        return 2
    print(summarize(args.path, data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
