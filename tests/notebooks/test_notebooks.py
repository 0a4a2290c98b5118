"""The notebooks run top to bottom in a real kernel, offline."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


def rich(cell: nbformat.NotebookNode, mime: str) -> str:
    """The cell's outputs of one MIME type (``text/html``, ``image/png``...), joined."""
    return "".join(o.get("data", {}).get(mime, "") for o in cell.outputs)


def in_order(text: str, *pieces: str) -> None:
    """Each piece occurs in ``text``, after the one before it."""
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        assert found >= 0, f"{piece!r} not found after position {at} in:\n{text}"
        at = found + len(piece)


def saved_widget_state(notebook: nbformat.NotebookNode) -> dict[str, object]:
    widgets = notebook.metadata.get("widgets", {})
    state: dict[str, object] = widgets.get("application/vnd.jupyter.widget-state+json", {})
    return state


def execute(path: Path, folder: Path) -> nbformat.NotebookNode:
    """Run a notebook in a kernel of its own, in ``folder``, with an audit log of its own."""
    notebook = nbformat.read(path, as_version=4)
    env = {**os.environ, "MLXNB_AUDIT": str(folder / "audit.sqlite3")}
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    # A loop of this thread's own: notebooks run two at a time, each from a pool thread.
    asyncio.run(client.async_execute(env=env))
    return notebook


Executed = Callable[[Path], nbformat.NotebookNode]


@pytest.fixture(scope="module")
def executed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Executed]:
    """The notebooks selected in this session, run two at a time from the first test on.

    One notebook keeps about one core busy (its kernel), so two at once halve the wall time
    on a two-core machine. Each has its own folder and audit log, so their rows never mix.
    """
    selected = [
        item.callspec.params["path"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    ]
    pool = ThreadPoolExecutor(max_workers=2)
    started: dict[Path, Future[nbformat.NotebookNode]] = {}

    def start(path: Path) -> Future[nbformat.NotebookNode]:
        if path not in started:
            folder = tmp_path_factory.mktemp(path.stem)
            started[path] = pool.submit(execute, path, folder)
        return started[path]

    for path in selected:
        start(path)
    yield lambda path: start(path).result()
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, executed: Executed) -> None:
    notebook = executed(path)
    outputs = [o for cell in code_cells(notebook) for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    check = CHECKS.get(path.name)
    assert check is not None, f"{path.name} has no output checks: add them to CHECKS"
    check(notebook)


def test_notebooks_are_stored_without_outputs() -> None:
    """Git keeps the notebooks stripped: no outputs, no execution counts, no widget state."""
    assert {path.name for path in NOTEBOOKS} >= {
        "01-quickstart.ipynb",
        "02-tools.ipynb",
        "03-evaluation.ipynb",
        "04-api.ipynb",
        "05-audit.ipynb",
        "06-vision.ipynb",
    }
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in code_cells(notebook):
            assert cell.outputs == [] and cell.execution_count is None, (path.name, cell.source)
        assert "widgets" not in notebook.metadata, path.name


def check_quickstart_notebook(notebook: nbformat.NotebookNode) -> None:
    """The real model answered, and the chat widget's state was saved."""
    outputs = [o for cell in code_cells(notebook) for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Paris" in text
    assert saved_widget_state(notebook), "the chat widget's state should be saved"


def check_tools_notebook(notebook: nbformat.NotebookNode) -> None:
    """Tools ran in the kernel, their results went back to the model, the widget shows the call."""
    schema = printed(cell_with(notebook, "chat = mlxnb.Conversation(engine, tools=[get_weather])"))
    assert "'name': 'get_weather'" in schema and "'required': ['city']" in schema
    assert "'default': 'celsius'" in schema

    asked = printed(cell_with(notebook, "await chat.ask(")).splitlines()
    assert asked == [
        "It is sunny in Paris, 21 °C.",
        'get_weather({\'city\': \'Paris\'}) returned {"city": "Paris", "sky": "sunny", '
        '"temperature": 21, "unit": "celsius"}',
        "2 rounds: ['tool_calls', 'stop']",
    ]
    (history_cell,) = [c for c in code_cells(notebook) if c.source.strip() == "chat.messages"]
    history = printed(history_cell)
    in_order(history, "'role': 'user'", "'tool_calls'", "'role': 'tool'", '"temperature": 21')

    streamed = printed(cell_with(notebook, "async for event in chat.stream("))
    in_order(
        streamed,
        "RoundStart(round=0",
        "ToolCallDelta x",
        "ToolCall: get_weather({'city': 'Oslo', 'unit': 'fahrenheit'})",
        "Done: tool_calls",
        'ToolResult: {"city": "Oslo", "sky": "sunny", "temperature": 48, "unit": "fahrenheit"}',
        "RoundStart(round=1",
        "ContentDelta x",
        "'Oslo is sunny but cool: 48 °F.'",
        "Done: stop",
        "ChatTurn: 'Oslo is sunny but cool: 48 °F.'",
    )

    failed = printed(cell_with(notebook, "def divide(")).splitlines()
    assert failed == [
        "error: ZeroDivisionError: division by zero",
        "the model read: Error: ZeroDivisionError: division by zero",
        "answer: 1 divided by 0 is undefined: no number times 0 gives 1.",
    ]

    widget = cell_with(notebook, "widget = mlxnb.chat(")
    assert any(WIDGET_VIEW in o.get("data", {}) for o in widget.outputs)
    walk = printed(cell_with(notebook, "await widget.ask(")).splitlines()
    answer = "Go on Monday or Tuesday: both are sunny, and Wednesday brings rain."
    assert walk[:2] == [answer, "Looking up 3 days for Paris…"]
    assert [line.split() for line in walk[2:]] == [
        ["day", "high_c", "sky"],
        ["0", "Mon", "21", "sunny"],
        ["1", "Tue", "23", "sunny"],
        ["2", "Wed", "17", "rain"],
    ]
    # The saved widget state holds the turn with its tool pane: the call, what the tool printed,
    # the DataFrame it returned as a table, and the answer.
    models: dict[str, Any] = saved_widget_state(notebook).get("state", {})  # type: ignore[assignment]
    transcripts = [
        model["state"]["transcript"]
        for model in models.values()
        if isinstance(model, dict) and "transcript" in model.get("state", {})
    ]
    assert len(transcripts) == 1 and len(transcripts[0]) == 1
    (tool, content) = transcripts[0][0]["parts"]
    assert (tool["kind"], tool["name"], tool["arguments"]) == (
        "tool",
        "forecast",
        {"city": "Paris"},
    )
    assert tool["status"] == "done" and tool["error"] is None
    assert tool["output"]["stdout"] == "Looking up 3 days for Paris…\n"
    table = tool["output"]["table"]
    assert table["columns"] == ["day", "high_c", "sky"] and table["shape"] == [3, 3]
    assert table["rows"][2] == ["Wed", "17", "rain"]
    assert content == {"kind": "content", "text": answer}

    generated = printed(cell_with(notebook, "turn = engine.generate(")).splitlines()
    assert generated == [
        "tool_calls get_weather {'city': 'Rome'}",
        "{'city': 'Rome', 'sky': 'sunny', 'temperature': 15, 'unit': 'celsius'}",
    ]


def check_evaluation_notebook(notebook: nbformat.NotebookNode) -> None:
    """Twelve scored rows (six questions, two temperatures), a per-setting summary and a plot."""
    results = cell_with(notebook, "results = mlxnb.evaluate(")
    table = rich(results, "text/html")
    for column in ("prompt", "temperature", "content", "correct", "brief", "completion_tokens"):
        assert f"<th>{column}</th>" in table
    assert "<th>11</th>" in table and "<th>12</th>" not in table
    assert "The capital of France is Paris." in table  # greedy decoding of the real model

    summary = printed(cell_with(notebook, 'results.groupby("temperature")')).splitlines()
    assert summary[0].split() == ["correct", "brief", "completion_tokens"]
    assert summary[1].split() == ["temperature"]
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in summary[2:]}
    assert sorted(rows) == ["0.0", "1.5"]
    assert rows["0.0"][0] >= 0.5  # the greedy answers name most capitals
    assert all(0 <= score <= 1 for scores in rows.values() for score in scores[:2])

    plot = cell_with(notebook, "plt.show()")
    assert rich(plot, "image/png"), "the comparison should be plotted"
    assert "<Figure size 900x320 with 2 Axes>" in printed(plot)


def check_api_notebook(notebook: nbformat.NotebookNode) -> None:
    """The server answered the openai client and curl (plain and streamed), then stopped."""
    url = printed(cell_with(notebook, "server = mlxnb.serve(engine)")).strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    models = printed(cell_with(notebook, "client.models.list()"))
    assert models.startswith("['") and models.endswith("']\n")

    answer = printed(cell_with(notebook, "reply = client.chat.completions.create(")).splitlines()
    assert "Paris" in answer[0] and answer[1].startswith("CompletionUsage(completion_tokens=")
    counted, reported = printed(cell_with(notebook, "input_tokens.count(")).split()
    assert counted == reported and int(counted) > 5
    streamed = printed(cell_with(notebook, "stream=True,"))
    assert len(streamed.strip()) > 20

    listed = printed(cell_with(notebook, 'print(curl(f"{server.url}/models"))')).splitlines()
    assert listed[0] == f"$ curl -s {url}/models"
    assert json.loads(listed[1])["object"] == "list"

    posted = printed(
        cell_with(notebook, 'raw = curl(f"{server.url}/chat/completions"')
    ).splitlines()
    assert posted[0].startswith(f"$ curl -s {url}/chat/completions -H ")
    assert json.loads(posted[1])["object"] == "chat.completion"
    assert "Rome" in posted[2]

    events = printed(cell_with(notebook, 'print(curl("-N"')).splitlines()
    assert events[0].startswith(f"$ curl -s -N {url}/chat/completions")
    chunks = [line for line in events if line.startswith("data: {")]
    assert len(chunks) >= 2 and [line for line in events if line][-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in chunks)

    audited = printed(cell_with(notebook, "engine.audit.tail(5)"))
    assert audited.count("/v1/chat/completions") >= 4

    assert printed(cell_with(notebook, "server.stop()")) == "running: False\n"


def check_audit_notebook(notebook: nbformat.NotebookNode) -> None:
    """The notebook's own log: eleven turns from three doors, queried, summarised and plotted."""
    traffic = printed(cell_with(notebook, "def ask("))
    assert traffic.startswith("ContextLengthError - the prompt has ")
    assert printed(cell_with(notebook, "results = mlxnb.evaluate(")) == "11 rows\n"

    problems = printed(cell_with(notebook, "problems = log.to_pandas("))
    assert "ContextLengthError" in problems and "cancelled" in problems

    summary = cell_with(notebook, "log.summary()")
    html = rich(summary, "text/html")
    for column in ("turns", "errors", "cancelled", "duration_p50_s", "generation_tps_mean"):
        assert f"<th>{column}</th>" in html
    for source in ("eval", "python", "server"):
        assert f"<th>{source}</th>" in html

    counts = printed(cell_with(notebook, "pd.crosstab(")).splitlines()
    assert counts[0].split() == ["status", "cancelled", "error", "ok"]
    assert [line.split() for line in counts[2:]] == [
        ["eval", "0", "0", "4"],
        ["python", "1", "1", "3"],
        ["server", "0", "0", "2"],
    ]

    per_source = printed(cell_with(notebook, 'per_source = df.groupby("source")')).splitlines()
    assert per_source[0].split() == [
        "turns",
        "completion_tokens",
        "mean_ttft_s",
        "mean_tokens_per_s",
    ]
    assert [line.split()[:2] for line in per_source[2:]] == [
        ["eval", "4"],
        ["python", "5"],
        ["server", "2"],
    ]

    assert rich(cell_with(notebook, "plt.show()"), "image/png"), "the log should be plotted"
    exported = printed(cell_with(notebook, "log.export(")).split()
    assert exported[:2] == ["turns.parquet", "(11,"] and exported[-1] == "True"


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


CHECKS = {
    "01-quickstart.ipynb": check_quickstart_notebook,
    "02-tools.ipynb": check_tools_notebook,
    "03-evaluation.ipynb": check_evaluation_notebook,
    "04-api.ipynb": check_api_notebook,
    "05-audit.ipynb": check_audit_notebook,
    "06-vision.ipynb": check_vision_notebook,
}
