"""A conversation resumed in a new kernel, shared by the JupyterLab and Notebook 7 tests: chat
with thinking and a tool in one notebook, shut its kernel down, then in a second notebook (a new
kernel) ``mlxnb.chat(..., resume=id)`` shows the old transcript with its panes, the Recent menu
brings it back after Clear, and the next answer's request carries the old history."""

from __future__ import annotations

import json
from pathlib import Path

from labpage import Chat, LabPage

SETUP = """\
import json
import mlxnb
from mlxnb.testing import forced_output, tiny_model

engine = mlxnb.load(tiny_model(), audit=mlxnb.AuditLog({path!r}))
replies = iter({replies})


def options():
    return {{"logits_processors": [forced_output(engine.tokenizer, next(replies))],
            "max_tokens": 400}}


def get_weather(city: str) -> dict:
    \"\"\"Get the current weather in a city.

    Args:
        city: The city's name.
    \"\"\"
    return {{"city": city, "sky": "sunny"}}
"""
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
FIRST = "<think>\nI should look the weather up.\n</think>\n\n" + CALL
WIDGET = (
    "widget = mlxnb.chat(engine, tools=[get_weather], generation_options=options{extra})\nwidget"
)


def open_widget(lab_page: LabPage, path: Path, replies: list[str], extra: str = "") -> Chat:
    setup = SETUP.format(path=str(path), replies=json.dumps(replies))
    lab_page.open_notebook([setup, WIDGET.format(extra=extra)])
    chat = Chat(lab_page)
    chat.root.wait_for()
    lab_page.page.wait_for_function(
        "() => document.querySelector('[data-testid=mlxnb-chat]').dataset.status === 'ready'"
    )
    return chat


def check_old_turn(chat: Chat) -> None:
    turn = chat.turn(0)
    assert turn.get_by_test_id("user-message").inner_text() == "Weather in Paris?"
    turn.get_by_test_id("thinking-summary").click()
    assert "look the weather up" in turn.get_by_test_id("thinking-text").inner_text()
    assert turn.get_by_test_id("tool-name").inner_text() == "get_weather"
    assert "sunny" in turn.get_by_test_id("tool-result").inner_text()
    assert turn.get_by_test_id("content").inner_text() == "It is sunny in Paris."


def resume_through(lab_page: LabPage, tmp_path: Path) -> list[str]:
    """Chat in one kernel, resume in a new one, from the Recent menu too; the pages' errors."""
    path = tmp_path / "audit.sqlite3"
    lab_page.name += "-first"
    chat = open_widget(lab_page, path, [FIRST, "It is sunny in Paris."])
    chat.say("Weather in Paris?")
    chat.wait_finished()
    conversation_id = chat.kernel("print(widget.conversation_id)").strip()
    assert len(conversation_id) == 32
    lab_page.lab.shutdown_kernels()  # the kernel is gone: only the file remembers
    context = lab_page.page.context
    lab_page.page.close()  # the unsaved notebook's tab goes with its page

    second = LabPage(context.new_page(), lab_page.lab, lab_page.artifacts, "second")
    second.name = lab_page.name.replace("-first", "-second")
    second.page.set_default_timeout(30_000)
    chat = open_widget(second, path, ["Still sunny."], extra=f", resume={conversation_id!r}")
    assert chat.root.get_by_test_id("turn").count() == 1
    check_old_turn(chat)
    chat.shot("1-resumed")

    chat.clear.click()
    chat.root.get_by_test_id("turn").first.wait_for(state="detached")
    chat.recent.focus()
    option = chat.recent.locator(f'option[value="{conversation_id}"]')
    option.wait_for(state="attached")
    assert "Weather in Paris?" in option.inner_text()
    chat.recent.select_option(conversation_id)
    chat.turn(0).wait_for()
    check_old_turn(chat)
    chat.shot("2-from-the-recent-menu")

    chat.say("And tomorrow?")
    chat.wait_finished(1)
    assert chat.turn(1).get_by_test_id("content").inner_text() == "Still sunny."
    sent = chat.kernel(
        "print(json.dumps(json.loads(engine.audit.tail(1)['request'].iloc[0])['messages']))"
    )
    roles = [m["role"] for m in json.loads(sent)]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    return [*lab_page.errors, *second.errors]
