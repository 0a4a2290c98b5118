"""Tools under control in a Conversation, on the real engine (fixture model, forced output):
plain ``def`` tools in a thread (Stop at once, the late result dropped), approval."""

from __future__ import annotations

import asyncio
import builtins
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import mlxnb
from mlxnb import Conversation, ToolApproval, ToolResult
from mlxnb._chat_tools import DENIED
from mlxnb.events import ToolCall
from mlxnb.testing import ForcedOutput

Force = Callable[..., ForcedOutput]
CALL = '<tool_call>\n{"name": "%s", "arguments": {"city": "Paris"}}\n</tool_call>'


def scripted(force: Force, *replies: str, max_tokens: int = 400) -> Callable[[], Mapping[str, Any]]:
    """Generation options forcing one reply per request, in order."""
    pending = list(replies)

    def options() -> Mapping[str, Any]:
        assert pending, "the model was asked for more replies than the test scripted"
        return {"logits_processors": [force(pending.pop(0))], "max_tokens": max_tokens}

    return options


class SlowTool:
    """A plain ``def`` tool that blocks until released (or 30 s pass)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.thread: str | None = None

    def __call__(self, city: str) -> str:
        """Look the weather up, slowly.

        Args:
            city: The city.
        """
        self.thread = threading.current_thread().name
        self.started.set()
        self.release.wait(30)
        print("a late print")
        self.finished.set()
        return f"LATE RESULT for {city}"


def slow_tool(slow: SlowTool) -> mlxnb.Tool:
    return mlxnb.Tool("lookup", "Look the weather up.", {"type": "object"}, slow)


async def test_stop_during_a_slow_plain_tool_ends_the_turn_at_once(
    engine: mlxnb.Engine, force: Force, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = SlowTool()
    chat = Conversation(
        engine, tools=[slow_tool(slow)], generation_options=scripted(force, CALL % "lookup", "ok")
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(chat.ask("Weather?"))
    beat = asyncio.get_running_loop().create_task(ticker())
    try:
        while not slow.started.is_set():
            await asyncio.sleep(0.01)
        before = ticks
        await asyncio.sleep(0.2)
        assert ticks - before >= 5, "the kernel's loop must stay free while a def tool runs"
        assert slow.thread is not None and slow.thread != threading.current_thread().name
        stopped = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - stopped < 1.0
    finally:
        beat.cancel()
    assert not slow.finished.is_set(), "the tool was still running when the turn ended"
    turn = chat.turns[-1]
    assert turn.finish_reason == "cancelled" and turn.tool_results == ()
    call_id = turn.tool_calls[0].id
    history = chat.messages
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[2] == {
        "role": "tool",
        "tool_call_id": call_id,
        "name": "lookup",
        "content": "Error: cancelled",
    }
    slow.release.set()  # the tool ends later: its result (and what it prints) goes nowhere
    assert slow.finished.wait(5)
    await asyncio.sleep(0.05)
    assert chat.messages == history
    assert "a late print" not in capsys.readouterr().out
    assert type(sys.stdout).__name__ != "_Stdout", "the capture is undone when the tool ends"
    assert not chat.busy
    assert (await chat.ask("And now?")).content == "ok"


def printing_frame(city: str) -> Any:
    """A table of readings.

    Args:
        city: The city.
    """
    import pandas as pd

    print(f"fetching {city}")
    print("done")
    return pd.DataFrame({"hour": range(30), "celsius": [20 + h % 5 for h in range(30)]})


def figure(city: str) -> Any:
    """A chart.

    Args:
        city: The city.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2, 3], [3, 1, 2])
    ax.set_title(city)
    plt.close(fig)
    return fig


async def test_stdout_and_rich_results_reach_the_result_not_the_model_text(
    engine: mlxnb.Engine, force: Force, capsys: pytest.CaptureFixture[str]
) -> None:
    chat = Conversation(
        engine,
        tools=[printing_frame, figure],
        generation_options=scripted(
            force, CALL % "printing_frame" + CALL % "figure", "Here you are."
        ),
    )
    print("before")
    turn = await chat.ask("Readings?")
    table, chart = turn.tool_results
    assert table.stdout == "fetching Paris\ndone\n"
    assert capsys.readouterr().out == "before\n", "a tool's prints go to its pane only"
    assert table.display is not None
    shown = table.display["table"]
    assert shown["columns"] == ["hour", "celsius"] and shown["shape"] == [30, 2]
    assert len(shown["rows"]) == 20 and shown["rows"][3] == ["3", "23"]
    assert table.content.splitlines()[0].split() == ["hour", "celsius"]
    assert "..." in table.content  # the model reads a bounded text table
    assert chart.display is not None and chart.display["image"].startswith("data:image/png;base64,")
    assert 1_000 < len(chart.display["image"]) < 600_000
    assert chart.content == "(a matplotlib figure, shown to the user)"
    assert chat.messages[2]["content"] == table.content
    assert turn.content == "Here you are."


def get_weather(city: str) -> dict[str, str]:
    """Get the weather.

    Args:
        city: The city.
    """
    runs.append(city)
    return {"city": city, "sky": "sunny"}


runs: list[str] = []


@pytest.mark.parametrize("allow", [True, False])
async def test_an_approver_runs_or_denies_each_call(
    engine: mlxnb.Engine, force: Force, allow: bool
) -> None:
    runs.clear()
    asked: list[ToolCall] = []

    async def approve(call: ToolCall) -> bool:
        asked.append(call)
        return allow

    chat = Conversation(
        engine,
        tools=[get_weather],
        approve=approve,
        generation_options=scripted(force, CALL % "get_weather", "Fine."),
    )
    events = [event async for event in chat.stream("Weather?")]
    kinds = [type(e) for e in events if isinstance(e, ToolApproval | ToolResult)]
    assert kinds == [ToolApproval, ToolResult]
    approval = next(e for e in events if isinstance(e, ToolApproval))
    assert asked == [approval.call] and approval.call.arguments == {"city": "Paris"}
    result = chat.turns[-1].tool_results[0]
    if allow:
        assert runs == ["Paris"] and result.ok
        assert chat.messages[2]["content"] == '{"city": "Paris", "sky": "sunny"}'
    else:
        assert runs == [] and result.error == DENIED
        assert chat.messages[2]["content"] == f"Error: {DENIED}"
        assert "user denied" in chat.messages[2]["content"]
    assert chat.turns[-1].content == "Fine."


async def test_approve_true_asks_on_standard_input(
    engine: mlxnb.Engine, force: Force, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs.clear()
    prompts: list[str] = []
    answers = iter(["n", " Yes "])

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(builtins, "input", fake_input)
    chat = Conversation(
        engine,
        tools=[get_weather],
        approve=True,
        generation_options=scripted(force, CALL % "get_weather", "No.", CALL % "get_weather", "Y"),
    )
    await chat.ask("one")
    await chat.ask("two")
    assert prompts == ['Run tool get_weather({"city": "Paris"})? [y/N] '] * 2
    assert runs == ["Paris"]
    assert [r.error for t in chat.turns for r in t.tool_results] == [DENIED, None]


async def test_stop_while_waiting_for_approval(engine: mlxnb.Engine, force: Force) -> None:
    waiting = asyncio.Event()

    async def never(call: ToolCall) -> bool:
        waiting.set()
        await asyncio.sleep(3600)
        return True

    chat = Conversation(
        engine,
        tools=[get_weather],
        approve=never,
        generation_options=scripted(force, CALL % "get_weather"),
    )
    task = asyncio.get_running_loop().create_task(chat.ask("Weather?"))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert chat.turns[-1].finish_reason == "cancelled"
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "tool"]


def test_approve_must_be_a_bool_or_a_function(engine: mlxnb.Engine) -> None:
    with pytest.raises(TypeError, match="approve must be"):
        Conversation(engine, approve="yes")  # type: ignore[arg-type]
