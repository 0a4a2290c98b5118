"""Conversation and tool loop on the real engine (fixture model, forced output)."""

from __future__ import annotations

import asyncio

import pytest
from widget_fakes import Script
from widget_scripts import ANSWER, BOOM_CALL, THINK_ANSWER, WEATHER_CALL, boom, get_weather

import mlxnb
from mlxnb._chat import ChatTurn, Conversation, RoundStart, sum_usage
from mlxnb._tools import ToolResult
from mlxnb.errors import GenerationError
from mlxnb.events import ContentDelta, Done, ThinkingDelta, ToolCall, Turn, Usage
from mlxnb.testing import FakeEngine


async def test_answer_with_thinking(engine: mlxnb.Engine, script: Script) -> None:
    chat = Conversation(engine, system="Be brief.", generation_options=script(THINK_ANSWER))
    turn = await chat.ask("Show me code")
    assert turn.content == ANSWER
    assert turn.reasoning.strip() == "The user wants code."
    assert turn.finish_reason == "stop"
    assert turn.thinking_seconds is not None and 0 < turn.thinking_seconds < turn.seconds
    assert turn.usage.completion_tokens > 10 and turn.usage.prompt_tokens > 5
    assert turn.time_to_first_token is not None and turn.tokens_per_second is not None
    assert chat.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Show me code"},
        {"role": "assistant", "content": ANSWER, "reasoning_content": turn.reasoning},
    ]
    assert turn.stats() == {
        "ttft": round(turn.time_to_first_token, 3),
        "tps": round(turn.tokens_per_second, 1),
        "prompt_tokens": turn.usage.prompt_tokens,
        "completion_tokens": turn.usage.completion_tokens,
        "seconds": round(turn.seconds, 3),
        "rounds": 1,
        "finish_reason": "stop",
        # one round: the conversation the model saw is its prompt and this answer
        "context_tokens": turn.usage.prompt_tokens + turn.usage.completion_tokens,
    }


async def test_stream_yields_rounds_events_and_the_turn_last(
    engine: mlxnb.Engine, script: Script
) -> None:
    chat = Conversation(engine, generation_options=script(THINK_ANSWER))
    events = [event async for event in chat.stream("code?")]
    assert events[0] == RoundStart(0)
    assert isinstance(events[-1], ChatTurn)
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == ANSWER
    assert any(isinstance(e, ThinkingDelta) for e in events)


async def test_tool_loop_runs_python_tools_and_feeds_results_back(
    engine: mlxnb.Engine, script: Script
) -> None:
    chat = Conversation(
        engine,
        tools=[get_weather],
        generation_options=script(WEATHER_CALL, "It is sunny in Paris."),
    )
    turn = await chat.ask("Weather in Paris?")
    assert turn.content == "It is sunny in Paris."
    assert [c.name for c in turn.tool_calls] == ["get_weather"]
    assert [(r.content, r.error) for r in turn.tool_results] == [
        ('{"city": "Paris", "sky": "sunny"}', None)
    ]
    assert len(turn.rounds) == 2 and turn.finish_reason == "stop"
    roles = [m["role"] for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call_id = turn.tool_calls[0].id
    assert chat.messages[1]["tool_calls"][0]["id"] == call_id
    assert chat.messages[2] == {
        "role": "tool",
        "tool_call_id": call_id,
        "name": "get_weather",
        "content": '{"city": "Paris", "sky": "sunny"}',
    }
    # the second round's prompt really contained the tool result: it cost more prompt tokens
    assert turn.rounds[1].usage.prompt_tokens > turn.rounds[0].usage.prompt_tokens


async def test_a_raising_tool_becomes_an_error_result_and_the_turn_goes_on(
    engine: mlxnb.Engine, script: Script
) -> None:
    chat = Conversation(
        engine, tools=[boom], generation_options=script(BOOM_CALL, "Sorry, no data.")
    )
    turn = await chat.ask("Data?")
    assert turn.content == "Sorry, no data."
    assert turn.tool_results[0].error == "RuntimeError: no data for Mars"
    assert chat.messages[2]["content"] == "Error: RuntimeError: no data for Mars"
    assert turn.error is None


@pytest.mark.parametrize("rounds", [0, 2])
async def test_tool_rounds_are_bounded(engine: mlxnb.Engine, script: Script, rounds: int) -> None:
    chat = Conversation(
        engine,
        tools=[get_weather],
        max_tool_rounds=rounds,
        generation_options=script(*[WEATHER_CALL] * (rounds + 1)),
    )
    turn = await chat.ask("Loop forever")
    assert len(turn.rounds) == rounds + 1
    assert len(turn.tool_results) == rounds
    assert turn.error == f"stopped after {rounds} tool rounds (max_tool_rounds)"
    assert turn.finish_reason == "tool_calls"


async def test_cancel_keeps_the_partial_answer_and_frees_the_engine(
    engine: mlxnb.Engine, script: Script
) -> None:
    chat = Conversation(engine, generation_options=script("word " * 300, "again"))
    seen: list[str] = []

    async def consume() -> None:
        async for event in chat.stream("Talk a lot"):
            if isinstance(event, ContentDelta):
                seen.append(event.text)

    task = asyncio.get_running_loop().create_task(consume())
    while len(seen) < 5:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    turn = chat.turns[-1]
    assert turn.finish_reason == "cancelled"
    assert 5 <= len(turn.content.split()) < 100
    assert turn.usage.completion_tokens >= 5 and turn.tokens_per_second is not None
    assert chat.messages[-1] == {"role": "assistant", "content": turn.content}
    assert not chat.busy
    assert (await chat.ask("and now?")).content == "again"


async def test_breaking_out_of_the_stream_records_a_cancelled_turn(
    engine: mlxnb.Engine, script: Script
) -> None:
    chat = Conversation(engine, generation_options=script("word " * 300))
    stream = chat.stream("Talk")
    async for event in stream:
        if isinstance(event, ContentDelta):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert chat.turns[-1].finish_reason == "cancelled"
    assert not chat.busy


async def test_undo_and_clear(engine: mlxnb.Engine, script: Script) -> None:
    chat = Conversation(engine, system="sys", generation_options=script("one", "two", "three"))
    await chat.ask("first")
    await chat.ask("second")
    assert chat.undo() == "second"
    assert [m["content"] for m in chat.messages] == ["sys", "first", "one"]
    assert len(chat.turns) == 1
    assert (await chat.ask("second")).content == "three"
    chat.clear()
    assert chat.messages == [{"role": "system", "content": "sys"}]
    assert chat.turns == ()
    with pytest.raises(IndexError):
        chat.undo()


async def test_to_dataframe(engine: mlxnb.Engine, script: Script) -> None:
    chat = Conversation(engine, tools=[get_weather], generation_options=script(WEATHER_CALL, "ok"))
    assert chat.to_dataframe().empty
    await chat.ask("weather")
    frame = chat.to_dataframe()
    row = frame.iloc[0]
    assert (row.user, row.content, row.tool_calls, row.rounds) == (
        "weather",
        "ok",
        ["get_weather"],
        2,
    )
    assert row.completion_tokens > 0 and row.finish_reason == "stop"


async def test_engine_errors_end_the_turn_instead_of_raising() -> None:
    chat = Conversation(FakeEngine([[GenerationError("worker died")]]))
    turn = await chat.ask("hi")
    assert (turn.finish_reason, turn.error) == ("error", "GenerationError: worker died")
    assert [m["role"] for m in chat.messages] == ["user", "assistant"]
    assert not chat.busy


async def test_done_with_error_is_an_error_turn() -> None:
    fake = FakeEngine([[ContentDelta("Par"), Done("error", Usage(), "out of memory")]])
    turn = await Conversation(fake).ask("hi")
    assert (turn.finish_reason, turn.error, turn.content) == ("error", "out of memory", "Par")


async def test_one_turn_at_a_time() -> None:
    fake = FakeEngine([[ContentDelta("a"), Done("stop", Usage())]], delay=0.05)
    chat = Conversation(fake)
    first = chat.stream("one")
    assert isinstance(await first.__anext__(), RoundStart)
    assert await first.__anext__() == ContentDelta("a")
    with pytest.raises(RuntimeError, match="a turn is running"):
        await chat.ask("two")
    with pytest.raises(RuntimeError):
        chat.clear()
    await first.aclose()  # type: ignore[attr-defined]
    assert [call.outcome for call in fake.calls] == ["cancelled"]


@pytest.mark.parametrize(
    ("default", "override", "sent"), [(None, None, None), (True, False, False)]
)
async def test_request_options(
    default: bool | None, override: bool | None, sent: bool | None
) -> None:
    fake = FakeEngine()
    chat = Conversation(
        fake,
        tools=[get_weather],
        enable_thinking=default,
        generation_options={"max_tokens": 7},
    )
    await chat.ask("hi", enable_thinking=override)
    call = fake.calls[0]
    assert call.enable_thinking is sent
    assert call.sampling["max_tokens"] == 7
    assert call.meta.source == "python" and call.meta.conversation_id == chat.conversation_id
    assert call.tools is not None and call.tools[0]["function"]["name"] == "get_weather"


def test_sum_usage_weights_speed_by_tokens() -> None:
    def turn(completion: int, tps: float, ttft: float) -> Turn:
        usage = Usage(10, completion, 2, ttft, None, tps, 0.5)
        return Turn("", "", (), (), "stop", usage)

    total = sum_usage([turn(100, 100.0, 0.2), turn(100, 50.0, 0.1)])
    assert (total.prompt_tokens, total.completion_tokens, total.cached_tokens) == (20, 200, 4)
    assert total.time_to_first_token == 0.2
    assert total.generation_tps == pytest.approx(200 / 3.0)
    assert sum_usage([]) == Usage()


def test_tool_result_and_round_start_are_frozen() -> None:
    with pytest.raises(AttributeError):
        RoundStart(0).round = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ToolResult("a", "b", {}, "c").content = "d"  # type: ignore[misc]
    assert ToolCall(0, "a", "b", {}).type == "tool_call"
