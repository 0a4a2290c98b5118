"""A chat's transcript as a markdown document or a new notebook.

Both read the widget's transcript (the entries ``protocol.py`` builds), so they hold what the
page shows: each message with the context its ``@name`` mentions inserted, each answer with its
model, thinking (collapsed), tool calls and their results, and how it ended. In a notebook,
messages become markdown cells and the answers' Python code blocks (fenced as ``python`` or
with no language) become code cells, ready to run; other code stays fenced in markdown.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

Entry = dict[str, Any]
Segment = tuple[Literal["markdown", "code"], str]

PYTHON: Final = frozenset({"", "python", "py", "python3", "ipython", "ipython3"})
_FENCE: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def _fence(text: str, language: str = "") -> str:
    """``text`` in a fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{language}\n{text.rstrip(chr(10))}\n{ticks}"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def split_code(markdown: str) -> list[Segment]:
    """Markdown → segments: prose (other fences kept in it) and Python code blocks' bodies."""
    segments: list[Segment] = []
    prose: list[str] = []
    lines = iter(markdown.split("\n"))
    for line in lines:
        opened = _FENCE.match(line)
        if opened is None:
            prose.append(line)
            continue
        fence, info = opened.group(1), opened.group(2).strip()
        body: list[str] = []
        closed = False
        for inner in lines:
            closing = inner.strip()
            if len(closing) >= len(fence) and not closing.strip(fence[0]):
                closed = True
                break
            body.append(inner)
        language = info.split()[0].lower() if info else ""
        if language in PYTHON and body:
            text = "\n".join(prose).strip()
            if text:
                segments.append(("markdown", text))
            prose = []
            segments.append(("code", "\n".join(body)))
        else:
            prose.extend([line, *body, *([fence] if closed else [])])
    text = "\n".join(prose).strip()
    if text:
        segments.append(("markdown", text))
    return segments


def _user(entry: Entry) -> str:
    blocks = ["### You", str(entry.get("user", "")).strip() or "*(no text)*"]
    images = len(entry.get("images") or ())
    if images:
        blocks.append(f"*({images} image{'s' if images > 1 else ''} attached)*")
    for item in entry.get("context") or ():
        name = item.get("name", "")
        if item.get("found"):
            blocks.append(_details(f"@{name} · {item.get('kind', '')}", _fence(item["text"])))
        else:
            blocks.append(f"*@{name}: {item.get('text', '')}*")
    return "\n\n".join(blocks)


def _tool(part: Entry) -> str:
    name = part.get("name") or "tool"
    arguments = part.get("arguments")
    shown = json.dumps(arguments, indent=2, ensure_ascii=False) if arguments else part["raw"]
    blocks = [f"**Tool call** `{name}`", _fence(shown or "", "json")]
    if part.get("error"):
        blocks.append(f"Error: {part['error']}")
    elif part.get("result") is not None:
        blocks.append("Result:\n\n" + _fence(str(part["result"])))
    return "\n\n".join(blocks)


def _answer(entry: Entry) -> Iterator[Segment]:
    """The answer's segments: a heading, thinking, tool calls, prose and code, the ending."""
    model = entry.get("model")
    pending = [f"### {model}" if model else "### Assistant"]
    for part in entry.get("parts") or ():
        if part["kind"] == "thinking":
            seconds = part.get("seconds")
            label = f"Thinking ({seconds:.1f} s)" if seconds is not None else "Thinking"
            pending.append(_details(label, part["text"].strip()))
        elif part["kind"] == "tool":
            pending.append(_tool(part))
        else:
            for kind, text in split_code(part["text"]):
                if kind == "markdown":
                    pending.append(text)
                    continue
                if pending:
                    yield "markdown", "\n\n".join(pending)
                pending = []
                yield "code", text
    status = entry.get("status")
    if status == "cancelled":
        pending.append("*(stopped)*")
    if entry.get("error"):
        pending.append(f"*Error: {entry['error']}*")
    if pending:
        yield "markdown", "\n\n".join(pending)


def transcript_markdown(transcript: Sequence[Entry], title: str = "Chat") -> str:
    """The whole conversation as one markdown document (code blocks stay fenced)."""
    blocks = [f"# {title}"]
    for entry in transcript:
        blocks.append(_user(entry))
        for kind, text in _answer(entry):
            blocks.append(_fence(text, "python") if kind == "code" else text)
    return "\n\n".join(blocks).strip() + "\n"


def _cell(kind: Literal["markdown", "code"], source: str) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "cell_type": kind,
        "id": uuid.uuid4().hex[:12],
        "metadata": {},
        "source": source,
    }
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def transcript_notebook(transcript: Sequence[Entry], title: str = "Chat") -> dict[str, Any]:
    """The conversation as an nbformat 4.5 notebook (a JSON-ready dict)."""
    cells = [_cell("markdown", f"# {title}")]
    for entry in transcript:
        cells.append(_cell("markdown", _user(entry)))
        cells.extend(_cell(kind, text) for kind, text in _answer(entry) if text.strip())
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_notebook(
    path: str | os.PathLike[str], transcript: Sequence[Entry], title: str = "Chat"
) -> Path:
    """Write :func:`transcript_notebook` to a new file (never over an existing one)."""
    target = Path(path)
    with target.open("x", encoding="utf-8") as file:
        json.dump(transcript_notebook(transcript, title), file, indent=1, ensure_ascii=False)
        file.write("\n")
    return target
