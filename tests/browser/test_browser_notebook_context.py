"""The notebook and the chat widget, both ways, in a real JupyterLab through headless Chromium:
``@name`` brings a kernel variable into a message (completed from the kernel's names), and a
code block of an answer goes back into the notebook as a new cell below the widget's."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from labpage import Chat, LabPage

pytestmark = pytest.mark.browser

OpenChat = Callable[..., Chat]

DATA = 'import pandas as pd\ndf = pd.DataFrame({"city": ["Paris", "Oslo"], "celsius": [21.0, 9.5]})'
CODE = "df.plot.bar(x='city', y='celsius')"
ANSWER = f"Here is a plot:\n\n```python\n{CODE}\n```\n\nRun it below."


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


def test_a_mention_and_a_code_cell_in_jupyterlab(open_chat: OpenChat, lab_page: LabPage) -> None:
    chat = open_chat([ANSWER], cells=[DATA])
    mention_df(chat)
    chat.shot("mention")
    assert lab_page.errors == []
