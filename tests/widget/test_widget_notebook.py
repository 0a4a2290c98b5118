"""A real kernel runs a notebook with the widget; the saved notebook keeps the conversation."""

from __future__ import annotations

from typing import Any

import nbformat
from nbclient import NotebookClient

SETUP = """\
import mlxnb
from mlxnb._widget import ChatWidget
from mlxnb.testing import forced_output, tiny_model

engine = mlxnb.load(tiny_model(), audit=False)
widget = ChatWidget(
    engine,
    generation_options=lambda: {
        "logits_processors": [forced_output(engine.tokenizer, "Saved **answer**.")]
    },
)
widget"""

ASK = """\
turn = await widget.ask("remember me")
print(turn.finish_reason, turn.content)"""


def widget_states(nb: Any) -> dict[str, Any]:
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    return {key: value["state"] for key, value in saved["state"].items()}


def test_a_saved_notebook_keeps_the_transcript() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(ASK)]
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    assert nb.cells[1].outputs[0]["text"] == "stop Saved **answer**.\n"
    view = nb.cells[0].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]
    state = widget_states(nb)[view["model_id"]]
    assert state["status"] == "ready"
    [entry] = state["transcript"]
    assert entry["user"] == "remember me"
    assert entry["parts"] == [{"kind": "content", "text": "Saved **answer**."}]
    assert "mlxnb-chat" in state["_esm"]
