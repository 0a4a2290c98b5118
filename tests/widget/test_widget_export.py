"""A chat exported: ``to_markdown()`` (also asked for by the page's Export button) and
``to_notebook(path)``, with messages as markdown cells and Python code blocks as code cells."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from widget_fakes import Wire, from_page

from mlxnb._widget import ChatWidget
from mlxnb._widget.export import split_code, transcript_markdown, transcript_notebook
from mlxnb.testing import FakeEngine, fake_reply

ANSWER = (
    "Load it:\n\n```python\nimport pandas as pd\ndf = pd.read_csv('x.csv')\n```\n\n"
    "Then in a shell:\n\n```bash\nls -l\n```\n\nAnd plot:\n\n```\ndf.plot()\n```"
)


def get_weather(city: str) -> dict[str, str]:
    """Weather in a city.

    Args:
        city: The city.
    """
    return {"sky": "sunny"}


@pytest.fixture
def widget() -> Iterator[ChatWidget]:
    engine = FakeEngine(
        [
            fake_reply(reasoning="The user wants code.", content=ANSWER),
            fake_reply(tool_calls=[("get_weather", {"city": "Oslo"})]),
            fake_reply("It is sunny."),
        ]
    )
    made = ChatWidget(engine, tools=[get_weather], namespace={"n": 3})
    yield made
    made.close()


def test_split_code_keeps_python_blocks_apart_and_other_fences_in_prose() -> None:
    assert split_code(ANSWER) == [
        ("markdown", "Load it:"),
        ("code", "import pandas as pd\ndf = pd.read_csv('x.csv')"),
        ("markdown", "Then in a shell:\n\n```bash\nls -l\n```\n\nAnd plot:"),
        ("code", "df.plot()"),
    ]
    assert split_code("no code") == [("markdown", "no code")]
    assert split_code("```python\nopen(\n") == [("code", "open(\n")], "an unclosed block runs on"


async def test_markdown_holds_messages_context_thinking_tools_and_code(
    widget: ChatWidget,
) -> None:
    await widget.ask("Show code for @n")
    await widget.ask("Weather in Oslo?")
    text = widget.to_markdown()
    assert text.startswith("# Chat with fake/model\n\n### You\n\nShow code for @n\n\n")
    assert "<details><summary>@n · int</summary>\n\n```\nn: int = 3\n```\n\n</details>" in text
    assert "<details><summary>Thinking" in text and "The user wants code." in text
    assert "```python\nimport pandas as pd\ndf = pd.read_csv('x.csv')\n```" in text
    assert "```bash\nls -l\n```" in text
    assert '**Tool call** `get_weather`\n\n```json\n{\n  "city": "Oslo"\n}\n```' in text
    assert 'Result:\n\n```\n{"sky": "sunny"}\n```' in text
    assert text.rstrip().endswith("It is sunny.")


async def test_the_page_asks_for_the_markdown(widget: ChatWidget) -> None:
    await widget.ask("Show code")
    wire = Wire(widget)
    from_page(widget, {"type": "export"})
    [reply] = wire.customs("export")
    assert reply["markdown"] == widget.to_markdown()


async def test_a_notebook_gets_markdown_and_code_cells(widget: ChatWidget, tmp_path: Path) -> None:
    await widget.ask("Show code")
    path = widget.to_notebook(tmp_path / "chat.ipynb")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    kinds = [(cell.cell_type, cell.source.splitlines()[0]) for cell in notebook.cells]
    assert kinds == [
        ("markdown", "# Chat with fake/model"),
        ("markdown", "### You"),
        ("markdown", "### fake/model"),
        ("code", "import pandas as pd"),
        ("markdown", "Then in a shell:"),
        ("code", "df.plot()"),
    ]
    assert "The user wants code." in notebook.cells[2].source
    assert notebook.metadata.kernelspec.name == "python3"
    with pytest.raises(FileExistsError):
        widget.to_notebook(path)


def test_a_stopped_or_failed_answer_says_so() -> None:
    entry = {
        "id": "1",
        "user": "hi",
        "images": ["data:image/jpeg;base64,AA"],
        "parts": [{"kind": "content", "text": "Par"}],
        "status": "cancelled",
        "error": None,
        "stats": None,
    }
    text = transcript_markdown([entry, {**entry, "status": "error", "error": "boom"}])
    assert "*(1 image attached)*" in text
    assert "Par\n\n*(stopped)*" in text and "*Error: boom*" in text
    cells = transcript_notebook([entry])["cells"]
    assert json.loads(json.dumps(cells)) == cells
