"""Driving JupyterLab and the chat widget from Playwright (sync API)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab import JupyterLab

SETUP = """\
import time

import mlxnb
from mlxnb._widget import ChatWidget
from mlxnb.testing import forced_output, {model}

engine = mlxnb.load({model}(), audit=False)
replies = iter({replies})


def paced(tokens, logits):  # a slower model, so a phase of the answer lasts long enough to see
    time.sleep({pace})
    return logits


def options():
    processors = [forced_output(engine.tokenizer, next(replies))]
    return {{"logits_processors": processors + ([paced] if {pace} else []), "max_tokens": 2000}}
"""

WEATHER_TOOL = '''\
def get_weather(city: str) -> dict:
    """Get the current weather in a city.

    Args:
        city: The city's name.
    """
    return {"city": city, "sky": "sunny", "celsius": 21}
'''

WIDGET = "widget = ChatWidget(engine, tools={tools}, generation_options=options)\nwidget"

KERNEL_EVAL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({ code, store_history: false });
  let out = "";
  future.onIOPub = (msg) => {
    const c = msg.content;
    if (msg.header.msg_type === "stream") out += c.text;
    if (msg.header.msg_type === "error") out += `${c.ename}: ${c.evalue}`;
  };
  await future.done;
  return out;
}"""

KERNEL_IDLE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
  return Boolean(kernel && kernel.connectionStatus === "connected" && kernel.status === "idle");
}"""

# Pastes a PNG (base64) into the chat's input as a clipboard image; true if the paste was taken.
PASTE_IMAGE = """([name, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const clipboard = new DataTransfer();
  clipboard.items.add(new File([bytes], name, { type: "image/png" }));
  const input = document.querySelector('[data-testid="mlxnb-chat"] [data-testid="input"]');
  input.focus();
  const event = new ClipboardEvent("paste", {
    clipboardData: clipboard, bubbles: true, cancelable: true,
  });
  input.dispatchEvent(event);
  return event.defaultPrevented;
}"""

# Drops a PNG (base64) on the chat's transcript as a file dragged from the desktop would be.
DROP_IMAGE = """([name, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const files = new DataTransfer();
  files.items.add(new File([bytes], name, { type: "image/png" }));
  const target = document.querySelector('[data-testid="mlxnb-chat"] [data-testid="log"]');
  const over = new DragEvent("dragover", { dataTransfer: files, bubbles: true, cancelable: true });
  target.dispatchEvent(over);
  const drop = new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true });
  target.dispatchEvent(drop);
  return over.defaultPrevented && drop.defaultPrevented;
}"""

# Records every distinct state of the last content part while a turn streams.
WATCH_CONTENT = """() => {
  const log = document.querySelector('[data-testid="log"]');
  window.__states = [];
  const record = () => {
    const parts = log.querySelectorAll('[data-testid="content"]');
    const text = parts.length ? parts[parts.length - 1].textContent : "";
    const last = window.__states[window.__states.length - 1];
    if (text && text !== last) window.__states.push(text);
  };
  window.__observer = new MutationObserver(record);
  window.__observer.observe(log, { childList: true, subtree: true, characterData: true });
}"""


class Chat:
    """The chat widget on a page: locators and actions by ``data-testid``."""

    def __init__(self, lab_page: LabPage) -> None:
        self.lab_page = lab_page
        self.page = lab_page.page
        self.root = self.page.get_by_test_id("mlxnb-chat")

    def __getattr__(self, testid: str) -> Any:
        return self.root.get_by_test_id(testid.replace("_", "-"))

    def say(self, text: str) -> None:
        """Type a message and press Enter."""
        self.input.fill(text)
        self.input.press("Enter")

    def turn(self, index: int = -1) -> Any:
        turns = self.root.get_by_test_id("turn")
        return turns.nth(index) if index >= 0 else turns.last

    def wait_finished(self, index: int = -1, status: str = "done") -> Any:
        """Wait for a turn to end (its ``data-status`` leaves ``streaming``)."""
        turn = self.turn(index)
        self.page.wait_for_function(
            "(el) => el.dataset.status !== 'streaming'", arg=turn.element_handle()
        )
        assert turn.get_attribute("data-status") == status
        return turn

    def paste_image(self, png: bytes, name: str = "pasted.png") -> bool:
        """Paste a PNG into the input as the clipboard would; returns whether it was taken."""
        data = base64.b64encode(png).decode("ascii")
        return bool(self.page.evaluate(PASTE_IMAGE, [name, data]))

    def drop_image(self, png: bytes, name: str = "dropped.png") -> bool:
        """Drop a PNG file on the chat; returns whether the drag and the drop were taken."""
        data = base64.b64encode(png).decode("ascii")
        return bool(self.page.evaluate(DROP_IMAGE, [name, data]))

    def kernel(self, code: str) -> str:
        """Run code in the notebook's kernel (while the widget is live) and return stdout."""
        return str(self.page.evaluate(KERNEL_EVAL, code))

    def shot(self, state: str) -> Path:
        return self.lab_page.shot(state, self.root)


class LabPage:
    """One browser page showing one notebook in the session's JupyterLab."""

    def __init__(self, page: Any, lab: JupyterLab, artifacts: Path, test_name: str) -> None:
        self.page = page
        self.lab = lab
        self.artifacts = artifacts
        self.name = re.sub(r"\W+", "-", test_name).strip("-")
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open_notebook(self, cells: list[str]) -> None:
        """Open a fresh notebook with these cells, wait for its kernel, run every cell."""
        name = self.lab.write_notebook(f"{self.name}.ipynb", cells)
        self.page.goto(self.lab.notebook_url(name))
        self.page.wait_for_function(KERNEL_IDLE, timeout=60_000)
        self.page.evaluate(
            "async () => { await window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
        )

    def open_chat(
        self,
        replies: list[str],
        *,
        tools: str = "",
        model: str = "tiny_model",
        cells: Sequence[str] = (),
        pace: float = 0.0,
    ) -> Chat:
        """Open a notebook whose widget is scripted to reply ``replies`` (forced output).

        ``model`` names the :mod:`mlxnb.testing` fixture to load (``tiny_vision_model`` for
        a vision model); ``cells`` run before the widget's cell; ``pace`` seconds are spent on
        each generated token.
        """
        sources = [SETUP.format(replies=json.dumps(replies), model=model, pace=pace), *cells]
        if tools:
            sources.append(WEATHER_TOOL)
        sources.append(WIDGET.format(tools=f"[{tools}]"))
        self.open_notebook(sources)
        chat = Chat(self)
        chat.root.wait_for()
        self.page.wait_for_function(
            "() => document.querySelector('[data-testid=mlxnb-chat]').dataset.status === 'ready'"
        )
        return chat

    def watch_content(self) -> None:
        self.page.evaluate(WATCH_CONTENT)

    def content_states(self) -> list[str]:
        return [str(s) for s in self.page.evaluate("() => window.__states")]

    def shot(self, state: str, locator: Any = None) -> Path:
        """Save a screenshot of ``locator`` (or the page) as a test artifact."""
        path = self.artifacts / f"{self.name}--{state}.png"
        (locator or self.page).screenshot(path=str(path))
        return path
