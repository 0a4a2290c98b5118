"""One scripted conversation that steers the chat widget through the page, shared by the
JupyterLab and Notebook 7 tests: Run and Deny on tool calls (approve=True), Stop during a slow
plain ``def`` tool, Continue on an answer cut by max_tokens while thinking, and
edit-and-resend."""

from __future__ import annotations

import json
import time
from typing import Any

from labpage import Chat, LabPage

CALL = '<tool_call>\n{{"name": "{name}", "arguments": {{"city": "{city}"}}}}\n</tool_call>'
STORY = "<think>\nFirst I plan a story about a fox.\n</think>\n\nOnce upon a time a fox"
# Cut at 6 tokens, inside the thought (<think>, a newline, then four words of it)
THOUGHT_REST = " story about a fox.\n</think>\n\nOnce upon a time a small fox was happy."
REPLIES = [
    (CALL.format(name="readings", city="Paris"), 400),
    ("It is **sunny** in Paris.", 400),
    (CALL.format(name="readings", city="Mars"), 400),
    ("I was not allowed to look.", 400),
    (CALL.format(name="slow_lookup", city="Oslo"), 400),
    (STORY, 6),
    (THOUGHT_REST, 400),
    ("Oslo is *cold*.", 400),
]

CELLS = [
    f"""\
import time
import mlxnb
import pandas as pd
from mlxnb.testing import forced_output, tiny_model

engine = mlxnb.load(tiny_model(), audit=False)
replies = iter({json.dumps(REPLIES)})


def options():
    text, max_tokens = next(replies)
    processor = forced_output(engine.tokenizer, text)
    return {{"logits_processors": [processor], "max_tokens": max_tokens}}


def readings(city: str) -> pd.DataFrame:
    \"\"\"Hourly temperatures in a city.

    Args:
        city: The city.
    \"\"\"
    print(f"looking up {{city}}")
    return pd.DataFrame({{"hour": range(24), "celsius": [20 + h % 4 for h in range(24)]}})


def slow_lookup(city: str) -> str:
    \"\"\"A lookup that takes 30 s.

    Args:
        city: The city.
    \"\"\"
    time.sleep(30)
    return "too late"
""",
    "widget = mlxnb.ChatWidget(engine, tools=[readings, slow_lookup], approve=True,"
    " generation_options=options)\nwidget",
]

TURN_STATUS = """([index, status]) => {
  const turn = document.querySelectorAll('[data-testid=mlxnb-chat] [data-testid=turn]')[index];
  return Boolean(turn) && turn.dataset.status === status;
}"""

TOOL_STATUS = """([index, status]) => {
  const turn = document.querySelectorAll('[data-testid=mlxnb-chat] [data-testid=turn]')[index];
  const tools = turn ? turn.querySelectorAll('[data-testid=tool-call]') : [];
  return tools.length > 0 && tools[tools.length - 1].dataset.status === status;
}"""


def open_steering_chat(lab_page: LabPage) -> Chat:
    """Open the scripted notebook and wait for its widget to be ready."""
    lab_page.open_notebook(CELLS)
    chat = Chat(lab_page)
    chat.root.wait_for()
    lab_page.page.wait_for_function(
        "() => document.querySelector('[data-testid=mlxnb-chat]').dataset.status === 'ready'"
    )
    return chat


def wait_turn(chat: Chat, index: int, status: str = "done", timeout: float = 30_000) -> Any:
    chat.page.wait_for_function(TURN_STATUS, arg=[index, status], timeout=timeout)
    return chat.root.get_by_test_id("turn").nth(index)


def wait_tool(chat: Chat, index: int, status: str) -> Any:
    chat.page.wait_for_function(TOOL_STATUS, arg=[index, status])
    return chat.root.get_by_test_id("turn").nth(index).get_by_test_id("tool-call").last


def steer_through(chat: Chat) -> float:
    """Run the whole scripted conversation; returns Stop's seconds from click to end state."""
    # 1. Run: the call waits in its pane, runs on the click; its print and table show
    chat.say("Weather in Paris?")
    pane = wait_tool(chat, 0, "pending")
    assert pane.get_by_test_id("tool-name").inner_text() == "readings"
    assert chat.kernel("print(len(widget._approvals.waiting))") == "1\n"
    chat.shot("1-approval-pending")
    pane.get_by_test_id("tool-run").click()
    turn = wait_turn(chat, 0)
    pane = turn.get_by_test_id("tool-call")
    assert pane.get_attribute("data-status") == "done"
    assert pane.get_by_test_id("tool-approval").count() == 0
    assert pane.get_by_test_id("tool-stdout").inner_text().strip() == "looking up Paris"
    table = pane.get_by_test_id("tool-table")
    assert table.locator("tr").count() == 21  # a header and the first 20 of 24 rows
    note = pane.get_by_test_id("tool-table-note").inner_text()
    assert note.startswith("24 rows \N{MULTIPLICATION SIGN} 2 columns")
    assert turn.get_by_test_id("content").last.inner_text() == "It is sunny in Paris."
    chat.shot("2-approved-with-table")
    # 2. Deny: the tool never runs and the model reads that the user denied the call
    chat.say("And on Mars?")
    pane = wait_tool(chat, 1, "pending")
    pane.get_by_test_id("tool-deny").click()
    turn = wait_turn(chat, 1)
    pane = turn.get_by_test_id("tool-call")
    assert pane.get_attribute("data-status") == "error"
    assert "denied" in pane.get_by_test_id("tool-result").inner_text()
    assert pane.get_by_test_id("tool-stdout").count() == 0
    told = chat.kernel("print(widget.messages[-2]['content'])")
    assert told.startswith("Error: the user denied this call")
    # 3. Stop while a slow plain def tool runs: control returns at once
    chat.say("And in Oslo?")
    wait_tool(chat, 2, "pending").get_by_test_id("tool-run").click()
    wait_tool(chat, 2, "running")
    assert chat.kernel("print(widget.busy, 6 * 7)") == "True 42\n", "the kernel stays free"
    clicked = time.perf_counter()
    chat.stop.click()
    wait_turn(chat, 2, "cancelled", timeout=10_000)
    stop_seconds = time.perf_counter() - clicked
    assert stop_seconds < 1.5, f"Stop took {stop_seconds:.2f} s"
    assert chat.input.is_enabled() and chat.stop.is_disabled()
    roles = chat.kernel("print([m['role'] for m in widget.messages][-3:])")
    assert roles == "['user', 'assistant', 'tool']\n"
    # 4. Continue: an answer cut by max_tokens while thinking carries on its thought in the
    # same pane, then answers, in the same turn and message
    chat.say("A story, please")
    turn = wait_turn(chat, 3)
    assert turn.get_by_test_id("content").count() == 0
    cut = turn.get_by_test_id("thinking-text").text_content() or ""
    assert cut.strip() == "First I plan a"
    assert "length" in turn.get_by_test_id("stats").inner_text()
    chat.shot("3-cut-by-max-tokens")
    turn.get_by_test_id("continue").click()
    chat.page.wait_for_function(
        "(n) => document.querySelectorAll('[data-testid=turn]').length === n"
        " && document.querySelectorAll('[data-testid=turn]')[n - 1].dataset.status === 'done'"
        " && document.querySelectorAll('[data-testid=turn]')[n - 1].textContent.includes('happy')",
        arg=4,
    )
    turn = chat.root.get_by_test_id("turn").nth(3)
    assert turn.get_by_test_id("thinking").count() == 1, "one pane: the thought went on in it"
    thought = turn.get_by_test_id("thinking-text").text_content() or ""
    assert thought.strip() == "First I plan a story about a fox."
    assert turn.get_by_test_id("content").inner_text() == "Once upon a time a small fox was happy."
    assert turn.get_by_test_id("continue").is_hidden()
    answer = chat.kernel("print(widget.messages[-1]['content'])")
    assert answer == "Once upon a time a small fox was happy.\n"
    # 5. Edit and resend: the second message, reworded; later turns go, the old branch stays
    chat.root.get_by_test_id("turn").nth(1).get_by_test_id("edit").click()
    box = chat.root.get_by_test_id("edit-input")
    assert box.input_value() == "And on Mars?"
    box.fill("And in Oslo, briefly?")
    chat.root.get_by_test_id("edit-send").click()
    chat.page.wait_for_function(
        "() => { const t = document.querySelectorAll('[data-testid=turn]');"
        " return t.length === 2 && t[1].dataset.status === 'done'; }"
    )
    turn = chat.root.get_by_test_id("turn").nth(1)
    assert turn.get_by_test_id("user-message").inner_text().strip() == "And in Oslo, briefly?"
    assert turn.get_by_test_id("content").inner_text() == "Oslo is cold."
    kept = chat.kernel("print(len(widget.history_branches), len(widget.messages))")
    assert kept == "1 6\n"  # user, assistant(call), tool, assistant; user, assistant
    chat.shot("4-edited")
    return stop_seconds
