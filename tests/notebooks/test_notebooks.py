"""The notebooks run top to bottom in a real kernel, offline."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def printed(cell: nbformat.NotebookNode) -> str:
    """What a cell printed and its result's plain-text form (a DataFrame's table, ...)."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def cell_with(notebook: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """The one code cell whose source contains ``source``."""
    found = [cell for cell in code_cells(notebook) if source in cell.source]
    assert len(found) == 1, f"expected one cell containing {source!r}, found {len(found)}"
    return found[0]


def saved_widget_state(notebook: nbformat.NotebookNode) -> dict[str, object]:
    widgets = notebook.metadata.get("widgets", {})
    state: dict[str, object] = widgets.get("application/vnd.jupyter.widget-state+json", {})
    return state


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in code_cells(notebook) for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if path.name == "01-quickstart.ipynb":
        assert "Paris" in text
        assert saved_widget_state(notebook), "the chat widget's state should be saved"
    elif path.name == "06-vision.ipynb":
        check_vision_notebook(notebook)


def check_vision_notebook(notebook: nbformat.NotebookNode) -> None:
    """The vision tour's cells printed their scripted answers and showed their tables."""
    assert printed(cell_with(notebook, "print(engine.kind)")).startswith("vision\n")

    chart = printed(cell_with(notebook, '{"type": "image", "image": fig}'))
    lines = chart.splitlines()
    assert lines[0] == "Temperatures rise from about 5 °C in January to a peak near 20 °C in July."
    # The figure is part of the prompt: far more tokens than the question alone.
    assert int(lines[1].split()[0]) > 30
    assert printed(cell_with(notebook, '"image_url": {"url": data_url}')) == "July.\n"

    first = printed(cell_with(notebook, 'await chat.ask("What is in this picture?"'))
    assert first == "A sunset over the sea: an orange sky above dark blue water.\n"

    streamed = printed(cell_with(notebook, "async for event in engine.stream("))
    assert "ThinkingDelta: The sun is low and the sky is orange" in streamed
    assert "ContentDelta: Either: the light fits both" in streamed
    assert "Done: stop," in streamed

    second = printed(cell_with(notebook, 'await chat.ask("Now this chart')).splitlines()
    assert second[:2] == [
        "July is the warmest month, at about 20 °C.",
        "[['image', 'text'], ['image', 'text']]",
    ]

    frame = cell_with(notebook, "mlxnb.evaluate(")
    table = printed(frame)
    for answer in ("It is red.", "It is green.", "It is blue.", "It is orange.", "It is hello."):
        assert answer in table
    html = "".join(o.get("data", {}).get("text/html", "") for o in frame.outputs)
    assert "<table" in html and html.count("It is ") == 5

    audit = printed(cell_with(notebook, "audit = engine.audit.df.tail("))
    assert "image_count" in audit and "eval" in audit and "python" in audit
    # The two-picture turn's audit row summarises both: the 128 x 96 sunset, then the chart.
    summaries = printed(cell_with(notebook, 'audit["image_count"] == 2'))
    assert summaries.count("'sha256'") == 2
    assert summaries.index("'width': 128") < summaries.index("'width': 400")

    refusal = printed(cell_with(notebook, "text_engine = mlxnb.load("))
    assert refusal.startswith("InvalidRequestError: ")
    assert "text-only model: it cannot see images" in refusal

    widget = cell_with(notebook, "mlxnb.chat(engine")
    assert any(WIDGET_VIEW in o.get("data", {}) for o in widget.outputs)
    asked = printed(cell_with(notebook, "await widget.ask("))
    assert asked == "An orange sunset over a dark sea.\n"
    # The saved widget state holds the turn: the answer and the picture's thumbnail.
    chats = [
        model["state"]
        for model in saved_widget_state(notebook).get("state", {}).values()
        if isinstance(model, dict) and "transcript" in model.get("state", {})
    ]
    assert len(chats) == 1 and chats[0]["supports_images"] is True
    (entry,) = [e for e in chats[0]["transcript"] if "An orange sunset" in json.dumps(e)]
    assert json.dumps(entry).count("data:image/") == 1
