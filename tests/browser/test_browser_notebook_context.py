"""The notebook and the chat widget, both ways, in a real JupyterLab through headless Chromium:
``@name`` brings a kernel variable into a message (completed from the kernel's names), and an
answer's code blocks go back into the notebook as new cells below the widget's. Notebook 7 runs
the same steps in test_browser_notebook7.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from labpage import Chat, LabPage
from notebook_context import ANSWER, DATA, export_markdown, insert_code_cells, mention_df

pytestmark = pytest.mark.browser


def test_a_mention_and_code_cells_in_jupyterlab(
    open_chat: Callable[..., Chat], lab_page: LabPage
) -> None:
    chat = open_chat([ANSWER], cells=[DATA])
    mention_df(chat)
    insert_code_cells(chat)
    chat.shot("mention-and-insert")
    export_markdown(chat)
    assert lab_page.errors == []
