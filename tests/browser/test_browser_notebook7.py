"""The chat widget in Jupyter Notebook 7 (not only JupyterLab), through headless Chromium, on the
real engine (fixture model, forced output). Screenshot: test-artifacts/widget/notebook7.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import JupyterLab
from labpage import Chat, LabPage
from notebook_context import ANSWER, DATA, insert_code_cells, mention_df
from resume import resume_through
from steering import open_steering_chat, steer_through

pytestmark = pytest.mark.browser

SETUP = """\
import mlxnb
import mlxnb.testing

engine = mlxnb.load(mlxnb.testing.tiny_model(), audit=False)
"""

WIDGET = """\
widget = mlxnb.ChatWidget(
    engine,
    generation_options=lambda: {
        "logits_processors": [
            mlxnb.testing.forced_output(engine.tokenizer, "Hello from **Notebook 7**")
        ]
    },
)
widget"""

# Notebook 7.6.5's own shortcuts plugin throws this on every notebook page, even with every
# third-party extension (anywidget, ipywidgets) disabled: upstream, not the widget's.
UPSTREAM_ERRORS = {"Cannot read properties of undefined (reading 'schema')"}


# Overrides conftest's session-wide JupyterLab for this module only, so ``lab_page`` (page,
# artifacts, kernel clean-up) drives a Notebook 7 server instead.
@pytest.fixture(scope="module")
def lab(chromium: str) -> Iterator[JupyterLab]:
    server = JupyterLab(app="notebook")
    yield server
    server.stop()


def test_chat_works_in_notebook_7(lab_page: LabPage, artifacts: Path) -> None:
    lab_page.open_notebook([SETUP, WIDGET])
    page = lab_page.page
    assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"
    assert page.locator("#main-panel").count() == 1  # Notebook 7's shell, not JupyterLab's
    chat = Chat(lab_page)
    chat.root.wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=mlxnb-chat]').dataset.status === 'ready'"
    )
    chat.say("Hi there")
    turn = chat.wait_finished()
    content = turn.get_by_test_id("content")
    assert content.locator("strong").inner_text() == "Notebook 7"
    assert content.inner_text() == "Hello from Notebook 7"
    assert chat.user_message.inner_text() == "Hi there"
    page.screenshot(path=str(artifacts / "notebook7.png"))
    reply = chat.kernel("print(widget.messages[-1]['content'])")
    assert reply == "Hello from **Notebook 7**\n"
    assert [e for e in lab_page.errors if e not in UPSTREAM_ERRORS] == []


def test_a_mention_and_code_cells_in_notebook_7(lab_page: LabPage) -> None:
    chat = lab_page.open_chat([ANSWER], cells=[DATA])
    mention_df(chat)
    insert_code_cells(chat)
    assert [e for e in lab_page.errors if e not in UPSTREAM_ERRORS] == []


def test_run_deny_stop_continue_and_edit_in_notebook_7(lab_page: LabPage) -> None:
    steer_through(open_steering_chat(lab_page))
    assert [e for e in lab_page.errors if e not in UPSTREAM_ERRORS] == []


def test_a_conversation_resumed_in_a_new_kernel_in_notebook_7(
    lab_page: LabPage, tmp_path: Path
) -> None:
    assert [e for e in resume_through(lab_page, tmp_path) if e not in UPSTREAM_ERRORS] == []
