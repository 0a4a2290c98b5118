"""ChatWidget: the page's say over a turn (Run / Deny, Stop during a tool, Continue, edit and
resend) and rich tool output, through the messages the page sends and the ops it gets back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from widget_fakes import Script, Wire, from_page
from widget_scripts import WEATHER_CALL

import mlxnb
from mlxnb._chat_tools import DENIED
from mlxnb._widget import ChatWidget
from mlxnb._widget.protocol import apply_op
from mlxnb.testing import forced_output

Make = Callable[..., tuple[ChatWidget, Wire]]
ran: list[str] = []


def get_weather(city: str) -> dict[str, str]:
    """Get the current weather.

    Args:
        city: The city's name.
    """
    print(f"looking up {city}")
    ran.append(city)
    return {"city": city, "sky": "sunny"}


@pytest.fixture
def make(engine: mlxnb.Engine, script: Script) -> Iterator[Make]:
    made: list[ChatWidget] = []

    def build(*replies: str, max_tokens: int = 400, **options: Any) -> tuple[ChatWidget, Wire]:
        widget = ChatWidget(
            engine, generation_options=script(*replies, max_tokens=max_tokens), **options
        )
        made.append(widget)
        return widget, Wire(widget)

    yield build
    for widget in made:
        widget.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def replayed(wire: Wire, start: dict[str, Any]) -> dict[str, Any]:
    """The turn the page builds from a start message and the ops after it."""
    turn: dict[str, Any] = {"parts": [], "status": "streaming", "error": None, "stats": None}
    turn["parts"] = list(start["turn"].get("parts", []))
    for op in wire.ops():
        apply_op(turn, op)
    return turn


@pytest.mark.parametrize("run", [True, False])
async def test_run_or_deny_from_the_page(make: Make, run: bool) -> None:
    ran.clear()
    widget, wire = make(WEATHER_CALL, "Done.", tools=[get_weather], approve=True)
    from_page(widget, {"type": "send", "text": "Weather?"})
    await wait_for(lambda: bool(widget._approvals.waiting))
    [call_id] = widget._approvals.waiting
    assert ["tool_status", "0-0", "pending"] in wire.ops()
    assert ran == [], "nothing runs before the page answers"
    from_page(widget, {"type": "approve", "id": call_id, "run": run})
    assert widget._task is not None
    turn = await widget._task
    assert turn is not None and turn.content == "Done."
    [part] = [p for p in widget.transcript[-1]["parts"] if p["kind"] == "tool"]
    if run:
        assert ran == ["Paris"]
        assert ["tool_status", "0-0", "running"] in wire.ops()
        assert (part["status"], part["error"]) == ("done", None)
        assert part["output"] == {"stdout": "looking up Paris\n"}
    else:
        assert ran == []
        assert (part["status"], part["error"]) == ("error", DENIED)
        assert widget.messages[2]["content"] == f"Error: {DENIED}"
    from_page(widget, {"type": "approve", "id": call_id, "run": True})
    assert wire.customs("refused")[-1]["message"].startswith("no tool call")


async def test_an_approve_function_decides_without_the_page(make: Make) -> None:
    ran.clear()
    widget, wire = make(WEATHER_CALL, "No.", tools=[get_weather], approve=lambda call: False)
    turn = await widget.ask("Weather?")
    assert ran == [] and turn.tool_results[0].error == DENIED
    assert not [op for op in wire.ops() if op[0] == "tool_status"], "no Run / Deny to show"
    assert widget._approvals.waiting == ()


async def test_stop_while_a_call_waits_for_approval(make: Make) -> None:
    widget, _ = make(WEATHER_CALL, tools=[get_weather], approve=True)
    from_page(widget, {"type": "send", "text": "Weather?"})
    await wait_for(lambda: bool(widget._approvals.waiting))
    from_page(widget, {"type": "stop"})
    assert widget._task is not None
    turn = await widget._task
    assert turn is not None and turn.finish_reason == "cancelled"
    entry = widget.transcript[-1]
    assert entry["status"] == "cancelled"
    [part] = [p for p in entry["parts"] if p["kind"] == "tool"]
    assert (part["status"], part["error"]) == ("error", "cancelled"), "no buttons left behind"
    assert widget._approvals.waiting == ()


async def test_stop_during_a_slow_plain_tool_returns_at_once(make: Make) -> None:
    release = threading.Event()

    def slow_lookup(city: str) -> str:
        """Look it up, slowly.

        Args:
            city: The city.
        """
        release.wait(30)
        return "late"

    call = WEATHER_CALL.replace("get_weather", "slow_lookup")
    widget, wire = make(call, tools=[slow_lookup])
    from_page(widget, {"type": "send", "text": "Weather?"})
    await wait_for(lambda: any(op[0] == "tool_call" for op in wire.ops()))
    await asyncio.sleep(0.1)  # the tool is running now
    stopped = time.perf_counter()
    from_page(widget, {"type": "stop"})
    assert widget._task is not None
    turn = await widget._task
    assert time.perf_counter() - stopped < 1.0
    release.set()
    assert turn is not None and turn.finish_reason == "cancelled"
    assert widget.transcript[-1]["status"] == "cancelled"
    assert [m["role"] for m in widget.messages] == ["user", "assistant", "tool"]


def readings(city: str) -> Any:
    """Hourly readings.

    Args:
        city: The city.
    """
    import pandas as pd

    return pd.DataFrame({"hour": [1, 2], "city": [city, city]})


async def test_a_returned_dataframe_is_shown_as_a_table(make: Make) -> None:
    call = WEATHER_CALL.replace("get_weather", "readings")
    widget, wire = make(call, "Two rows.", tools=[readings])
    await widget.ask("Readings?")
    [part] = [p for p in widget.transcript[-1]["parts"] if p["kind"] == "tool"]
    assert part["output"] == {
        "stdout": "",
        "table": {
            "columns": ["hour", "city"],
            "index": ["0", "1"],
            "rows": [["1", "Paris"], ["2", "Paris"]],
            "shape": [2, 2],
        },
    }
    [start] = wire.customs("start")
    assert replayed(wire, start)["parts"] == widget.transcript[-1]["parts"]


STORY = "Once upon a time a small fox lived by the river and"


async def test_continue_from_the_page_joins_the_answer(make: Make) -> None:
    widget, wire = make(STORY, " it was happy.", max_tokens=6)
    first = await widget.ask("A story?")
    assert first.finish_reason == "length"
    entry = widget.transcript[-1]
    assert entry["stats"]["finish_reason"] == "length"
    from_page(widget, {"type": "continue"})
    assert widget._task is not None
    joined = await widget._task
    assert joined is not None and joined.content == first.content + " it was happy."
    [again] = wire.customs("start")[1:]
    assert again["turn"]["id"] == entry["id"] and again["turn"]["parts"] == entry["parts"]
    assert len(widget.transcript) == 1
    final = widget.transcript[-1]
    assert final["id"] == entry["id"]
    assert [p["text"] for p in final["parts"]] == [joined.content]
    assert final["stats"]["finish_reason"] == "stop"
    from_page(widget, {"type": "continue"})
    assert "max_tokens" in wire.customs("refused")[-1]["message"]


THOUGHT = (
    "<think>\nFirst I list the foxes by the river, then I count them.\n</think>\n\nThree foxes."
)


async def test_continue_of_an_answer_cut_while_thinking_goes_on_in_its_pane(
    engine: mlxnb.Engine,
) -> None:
    tokens = engine.tokenizer.encode(THOUGHT, add_special_tokens=False)
    replies = [(THOUGHT, 7), (engine.tokenizer.decode(tokens[7:]), 60)]

    def options() -> dict[str, Any]:
        text, max_tokens = replies.pop(0)
        return {
            "logits_processors": [forced_output(engine.tokenizer, text)],
            "max_tokens": max_tokens,
        }

    widget = ChatWidget(engine, generation_options=options)
    wire = Wire(widget)
    cut = await widget.ask("Foxes?")
    assert cut.finish_reason == "length" and cut.content == ""
    [thought] = widget.transcript[-1]["parts"]
    assert thought["kind"] == "thinking" and thought["seconds"] is not None
    earlier = len(wire.ops())
    from_page(widget, {"type": "continue"})
    assert widget._task is not None
    joined = await widget._task
    assert joined is not None and joined.content == "Three foxes."
    [again] = wire.customs("start")[1:]
    assert again["turn"]["parts"] == [{**thought, "seconds": None}]  # the pane reopened
    page = {"parts": list(again["turn"]["parts"])}
    for op in wire.ops()[earlier:]:
        apply_op(page, op)
    final = widget.transcript[-1]["parts"]
    assert final == page["parts"], "the page shows what the kernel keeps"
    assert [p["kind"] for p in final] == ["thinking", "content"]
    assert final[0]["text"] == joined.reasoning
    assert final[0]["seconds"] >= thought["seconds"]
    widget.close()


async def test_edit_from_the_page_replaces_later_turns(make: Make) -> None:
    widget, wire = make("one", "two", "edited")
    await widget.ask("first")
    await widget.ask("second")
    before = widget.messages
    from_page(widget, {"type": "edit", "index": 0, "text": "first, again"})
    assert widget._task is not None
    await widget._task
    assert [e["user"] for e in widget.transcript] == ["first, again"]
    assert widget.transcript[0]["parts"][0]["text"] == "edited"
    assert widget.history_branches == [before]
    assert [m["content"] for m in widget.messages] == ["first, again", "edited"]
    from_page(widget, {"type": "edit", "index": 3, "text": "x"})
    assert "no turn 3" in wire.customs("refused")[-1]["message"]
    assert len(widget.transcript) == 1
