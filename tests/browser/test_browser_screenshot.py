"""The widget mid-answer, as the README's first screen shows it: thinking (opened), a tool call
with its result, and the second round's answer paused while it streams. With
``MLXNB_SCREENSHOT=docs/widget.png`` the test also saves that picture (palette PNG, small)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from labpage import WEATHER_TOOL, Chat, LabPage
from PIL import Image as PILImage

pytestmark = pytest.mark.browser

SETUP = """\
import tempfile
import threading
from pathlib import Path

import mlxnb
from mlxnb._widget import ChatWidget
from mlxnb.testing import forced_output, tiny_model

folder = tempfile.TemporaryDirectory()  # removed when the kernel exits
engine = mlxnb.load(tiny_model(Path(folder.name) / "tiny-qwen3-scripted"), audit=False)
gate = threading.Event()


class Pause:
    \"\"\"A logits processor: holds the stream after ``after`` tokens until ``gate`` opens.\"\"\"

    def __init__(self, after):
        self.after, self.seen = after, 0

    def __call__(self, tokens, logits):
        self.seen += 1
        if self.seen == self.after:
            gate.wait(60)
        return logits


REPLIES = iter([
    ({THINK!r}, None),
    ({ANSWER!r}, Pause(28)),
])


def options():
    text, pause = next(REPLIES)
    processors = [forced_output(engine.tokenizer, text)] + ([pause] if pause else [])
    return {{"logits_processors": processors, "max_tokens": 400}}
"""

REASONING = (
    "The user asks whether to bike in Paris today. I need the current weather first, "
    "so I will call get_weather for Paris, then answer from its result."
)
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
THINK = (
    f"<think>\n{REASONING}\n</think>\n\n"
    f"Let me check the weather first.<tool_call>\n{CALL}\n</tool_call>"
)
ANSWER = (
    "It is **sunny** and **21 °C** in Paris right now, so yes: a good day to bike.\n\n"
    "- Take sunglasses; no rain is expected.\n- Leave a little early if you stop for a coffee."
)
WIDGET = "widget = ChatWidget(engine, tools=[get_weather], generation_options=options)\nwidget"


def test_the_widget_mid_answer(lab_page: LabPage) -> None:
    setup = SETUP.format(THINK=THINK, ANSWER=ANSWER)
    lab_page.open_notebook([setup, WEATHER_TOOL, WIDGET])
    chat = Chat(lab_page)
    chat.root.wait_for()
    page = lab_page.page
    page.wait_for_function(
        "() => document.querySelector('[data-testid=mlxnb-chat]').dataset.status === 'ready'"
    )
    chat.say("What's the weather in Paris? Should I bike to work?")
    chat.tool_call.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=content]')].length === 2"
        " && document.querySelectorAll('[data-testid=content]')[1].textContent.length > 30"
    )
    try:
        chat.thinking_summary.click()  # opened by a person: it stays open
        turn = chat.turn()
        assert turn.get_attribute("data-status") == "streaming"
        assert chat.root.get_attribute("data-status") == "generating"
        assert chat.thinking.evaluate("el => el.open") is True
        assert chat.thinking_text.inner_text().strip() == REASONING
        assert chat.tool_status.inner_text() == "done"
        assert chat.tool_result.inner_text() == '{"city": "Paris", "sky": "sunny", "celsius": 21}'
        shown = turn.get_by_test_id("content").nth(1).inner_text()
        assert 30 < len(shown) < len(ANSWER.replace("**", "")), "paused mid-answer"
        picture = chat.shot("mid-answer")
        target = os.environ.get("MLXNB_SCREENSHOT")
        if target:
            save_small(picture, Path(target))
    finally:
        chat.kernel("gate.set()")
    chat.wait_finished()
    assert chat.kernel("print(widget.messages[-1]['content'])") == ANSWER + "\n"


def save_small(source: Path, target: Path) -> None:
    """Save a screenshot as a 128-colour palette PNG (a UI picture loses nothing visible)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with PILImage.open(source) as picture:
        small = picture.convert("RGB").quantize(colors=128, method=PILImage.Quantize.MEDIANCUT)
        small.save(target, format="PNG", optimize=True)
    assert target.stat().st_size < 200_000, f"{target} is too large for the README"
