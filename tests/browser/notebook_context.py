"""What the notebook-context browser tests do in JupyterLab and in Notebook 7 alike: mention a
kernel variable in a message, and insert an answer's code blocks as cells."""

from __future__ import annotations

from pathlib import Path

from labpage import Chat

DATA = 'import pandas as pd\ndf = pd.DataFrame({"city": ["Paris", "Oslo"], "celsius": [21.0, 9.5]})'
FIRST = "df.plot.bar(x='city', y='celsius')"
SECOND = "df.describe()"
ANSWER = f"Plot it:\n\n```python\n{FIRST}\n```\n\nThen:\n\n```python\n{SECOND}\n```\n\nDone."

CELL_SOURCES = """() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells
  .map((cell) => cell.getSource())"""


def mention_df(chat: Chat) -> None:
    """Type ``@d``, pick ``df`` from the kernel's names, send; check what the model got."""
    chat.input.press_sequentially("Plot @d")
    option = chat.root.locator('[data-testid="mention-option"][data-name="df"]')
    option.wait_for()
    assert "DataFrame 2x2" in option.inner_text()
    chat.input.press("Enter")
    assert chat.input.input_value() == "Plot @df "
    chat.input.press_sequentially("by city")
    chat.input.press("Enter")
    chat.wait_finished()
    assert chat.user_message.get_by_test_id("context-summary").inner_text() == "@df · DataFrame 2x2"
    chat.context_summary.click()
    assert "Paris" in chat.context_text.inner_text()
    sent = chat.kernel("print(widget.messages[0]['content'])")
    assert sent.startswith("Plot @df by city\n")
    assert "df: pandas DataFrame, 2 rows, 2 columns" in sent and "Oslo" in sent


def insert_code_cells(chat: Chat) -> None:
    """Insert the answer's second code block, then its first: both land right below the
    widget's cell (the last cell), in the order of the answer."""
    page = chat.page
    before = page.evaluate(CELL_SOURCES)
    inserts = chat.turn().get_by_test_id("insert-cell")
    assert inserts.count() == 2 and chat.turn().get_by_test_id("copy").count() == 2
    inserts.nth(1).click()
    inserts.nth(0).click()
    assert page.evaluate(CELL_SOURCES) == [*before, FIRST, SECOND]
    cells = page.locator(".jp-Notebook .jp-Cell")
    assert cells.count() == len(before) + 2
    assert FIRST in cells.nth(len(before)).inner_text().replace("\u200b", "")
    assert inserts.nth(0).inner_text() == "Inserted"


def export_markdown(chat: Chat) -> None:
    """Export downloads the conversation as markdown: what ``widget.to_markdown()`` says."""
    with chat.page.expect_download() as info:
        chat.export.click()
    download = info.value
    assert download.suggested_filename.startswith("chat-")
    assert download.suggested_filename.endswith(".md")
    text = Path(download.path()).read_text(encoding="utf-8")
    assert text == chat.kernel("print(widget.to_markdown(), end='')")
    assert f"```python\n{FIRST}\n```" in text and "@df · DataFrame 2x2" in text
