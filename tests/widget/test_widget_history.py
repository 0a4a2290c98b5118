"""The widget's saved conversations: the Recent list, resuming one with its panes, from the page
and from Python (real engine, forced output)."""

from __future__ import annotations

from typing import Any

from widget_fakes import Script, Wire, from_page
from widget_scripts import WEATHER_CALL, get_weather

import mlxnb
from mlxnb import Conversation
from mlxnb._widget import ChatWidget
from mlxnb._widget.history import entry_of, transcript_of

THINK_CALL = "<think>\nCheck the weather first.\n</think>\n\n" + WEATHER_CALL


def parts(entry: dict[str, Any]) -> list[str]:
    return [part["kind"] for part in entry["parts"]]


async def test_a_widget_resumes_a_saved_conversation_with_its_panes(
    engine: mlxnb.Engine, script: Script
) -> None:
    fresh = ChatWidget(engine, tools=[get_weather])
    wire = Wire(fresh)
    first = ChatWidget(engine, tools=[get_weather], generation_options=script(THINK_CALL, "Sunny."))
    await first.ask("Weather in Paris?")
    saved_id = first.conversation.conversation_id
    drawn = first.transcript
    assert parts(drawn[0]) == ["thinking", "tool", "content"]

    again = ChatWidget(engine, tools=[get_weather], resume=saved_id)
    assert again.conversation.conversation_id == saved_id
    assert again.transcript == drawn  # the panes as the page drew them
    assert again.messages == first.messages

    from_page(fresh, {"type": "recent"})
    [message] = wire.customs("recent")  # a message: other titles stay out of the notebook
    listed = message["conversations"]
    assert listed[0]["id"] == saved_id and listed[0]["title"] == "Weather in Paris?"
    assert listed[0]["turns"] == 1 and listed[0]["model"] == engine.model_id
    assert "recent" not in fresh.get_state()
    assert fresh.conversation_id != saved_id
    from_page(fresh, {"type": "resume", "id": saved_id})
    assert fresh.transcript == drawn and fresh.conversation.conversation_id == saved_id
    assert fresh.conversation_id == saved_id  # the page marks it in the menu
    fresh.clear()
    assert fresh.conversation_id == fresh.conversation.conversation_id != saved_id
    fresh.resume(saved_id)
    assert fresh.turns[0].tool_results[0].name == "get_weather"

    from_page(fresh, {"type": "resume", "id": "no-such-id"})
    [refusal] = wire.customs("refused")
    assert "no saved conversation 'no-such-id'" in refusal["message"]
    assert fresh.conversation.conversation_id == saved_id  # nothing changed


async def test_a_resumed_widget_goes_on_and_saves_the_longer_transcript(
    engine: mlxnb.Engine, script: Script
) -> None:
    first = ChatWidget(engine, generation_options=script("One."))
    await first.ask("First?")
    again = ChatWidget(
        engine, resume=first.conversation.conversation_id, generation_options=script("Two.")
    )
    turn = await again.ask("Second?")
    assert turn.content == "Two."
    third = ChatWidget(engine, resume=first.conversation.conversation_id)
    assert [entry["user"] for entry in third.transcript] == ["First?", "Second?"]
    assert [m["content"] for m in third.messages] == ["First?", "One.", "Second?", "Two."]


async def test_a_conversation_saved_from_python_is_drawn_from_its_turns(
    engine: mlxnb.Engine, script: Script
) -> None:
    conversation = Conversation(
        engine,
        tools=[get_weather],
        enable_thinking=True,
        generation_options=script(THINK_CALL, "Sunny."),
    )
    await conversation.ask("Weather?")
    widget = ChatWidget(engine, tools=[get_weather], resume=conversation.conversation_id)
    [entry] = widget.transcript
    assert parts(entry) == ["thinking", "tool", "content"]
    thinking, tool, content = entry["parts"]
    assert "weather first" in thinking["text"]
    assert tool["name"] == "get_weather" and tool["arguments"] == {"city": "Paris"}
    assert tool["result"] and "sunny" in tool["result"] and tool["status"] == "done"
    assert content["text"] == "Sunny." and entry["status"] == "done"
    assert entry["model"] == engine.model_id
    assert transcript_of(widget.conversation, "m")[0]["model"] == "m"
    assert entry_of(widget.turns[0], "x")["user"] == "Weather?"


async def test_a_widget_that_does_not_save_lists_nothing(
    engine: mlxnb.Engine, script: Script
) -> None:
    widget = ChatWidget(engine, save=False, generation_options=script("Hi."))
    await widget.ask("Hello?")
    wire = Wire(widget)
    from_page(widget, {"type": "recent"})
    assert wire.customs("recent") == [{"type": "recent", "conversations": []}]
