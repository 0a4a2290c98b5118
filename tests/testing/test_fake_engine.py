"""mlxnb.testing.FakeEngine: scripted replies at the engine's ``stream`` seam, kept honest by
running the same consumer code against it and against a real engine on the tiny model."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import pytest

import mlxnb
from mlxnb.errors import EngineClosedError, GenerationError, InvalidRequestError
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Turn,
    Usage,
    collect,
)
from mlxnb.testing import FakeEngine, ForcedOutput, fake_reply

HI = [{"role": "user", "content": "hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
REASONING = "The user wants weather.\n"
CONTENT = "Let me check.\n"
ARGUMENTS = {"city": "Paris"}
FORCED = (
    f"<think>\n{REASONING}</think>\n\n{CONTENT}"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)


def stop(completion: int = 1) -> Done:
    return Done("stop", Usage(completion_tokens=completion))


async def drain(engine: Any, **options: Any) -> list[Event]:
    return [event async for event in engine.stream(HI, **options)]


# -- scripting ---------------------------------------------------------------------------------


async def test_scripted_events_come_out_in_order_and_the_request_is_recorded() -> None:
    script = [ThinkingDelta("hm"), ContentDelta("Hello"), ContentDelta(" there"), stop(2)]
    fake = FakeEngine([script])
    events = await drain(fake, tools=[WEATHER_TOOL], enable_thinking=True, max_tokens=9)
    assert events == script
    (call,) = fake.calls
    assert (call.messages, call.tools, call.enable_thinking) == (HI, [WEATHER_TOOL], True)
    assert call.sampling == {"max_tokens": 9} and call.meta.source == "python"
    assert (call.events, call.outcome, call.cancelled) == (script, "finished", False)
    assert fake.pending == 0


async def test_each_request_consumes_the_next_script_then_the_default() -> None:
    fake = FakeEngine([fake_reply("one")])
    fake.enqueue(fake_reply("two"))
    assert fake.remaining == 2
    texts = [(await fake.agenerate(HI)).content for _ in range(3)]
    assert texts == ["one", "two", "ok"]
    assert fake.remaining == 0 and len(fake.calls) == 3


async def test_without_a_default_running_out_is_an_error() -> None:
    fake = FakeEngine(default=None)
    with pytest.raises(AssertionError, match="no reply left"):
        await drain(fake)
    assert fake.calls[0].outcome == "raised"


@pytest.mark.parametrize(
    "script",
    [[], [ContentDelta("no done")], [stop(), ContentDelta("after done")], [stop(), stop()]],
)
def test_a_script_must_end_with_done(script: list[Event]) -> None:
    with pytest.raises(ValueError, match="Done"):
        FakeEngine([script])


async def test_a_scripted_exception_is_raised_where_it_stands() -> None:
    fake = FakeEngine([[ContentDelta("Par"), GenerationError("worker died")]])
    seen: list[Event] = []
    with pytest.raises(GenerationError, match="worker died"):
        async for event in fake.stream(HI):
            seen.append(event)
    assert seen == [ContentDelta("Par")]
    assert fake.calls[0].outcome == "raised" and fake.pending == 0


def test_fake_reply_streams_like_the_engine() -> None:
    events = fake_reply("Hi there.", reasoning="Say hi.", tool_calls=[("get_weather", ARGUMENTS)])
    assert [type(e) for e in events] == [
        ThinkingDelta,
        ThinkingDelta,
        ContentDelta,
        ContentDelta,
        ToolCallDelta,
        ToolCall,
        Done,
    ]
    turn = collect(events)
    assert (turn.reasoning, turn.content, turn.finish_reason) == (
        "Say hi.",
        "Hi there.",
        "tool_calls",
    )
    assert [(c.index, c.name, c.arguments) for c in turn.tool_calls] == [
        (0, "get_weather", ARGUMENTS)
    ]
    error = collect(fake_reply("Par", finish_reason="error", error="out of memory"))
    assert (error.finish_reason, error.error) == ("error", "out of memory")


# -- cancellation ------------------------------------------------------------------------------


async def test_breaking_out_of_the_stream_is_a_cancellation() -> None:
    fake = FakeEngine([fake_reply("a b c d")])
    stream = fake.stream(HI)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    (call,) = fake.calls
    assert call.cancelled and call.events == [ContentDelta("a ")]
    assert fake.pending == 0


async def test_cancelling_the_consuming_task_is_a_cancellation() -> None:
    fake = FakeEngine([fake_reply("slow")], delay=10)
    task = asyncio.ensure_future(drain(fake))
    while not fake.calls:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.calls[0].outcome == "cancelled" and fake.pending == 0


async def test_stopping_at_done_is_not_a_cancellation() -> None:
    fake = FakeEngine()
    stream = fake.stream(HI)
    async for event in stream:
        if isinstance(event, Done):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert fake.calls[0].outcome == "finished"


def test_closing_the_blocking_stream_is_a_cancellation() -> None:
    fake = FakeEngine([fake_reply("a b")])
    stream = fake.stream_sync(HI)
    assert next(stream) == ContentDelta("a ")
    stream.close()  # type: ignore[attr-defined]
    assert fake.calls[0].cancelled


# -- folding -----------------------------------------------------------------------------------


async def test_generate_and_agenerate_fold_to_the_same_turn_as_collect() -> None:
    script = fake_reply("Sunny.", reasoning="Look it up.", tool_calls=[("get_weather", ARGUMENTS)])
    fake = FakeEngine([script, script, script])
    streamed = collect(await drain(fake))
    assert fake.generate(HI) == streamed == await fake.agenerate(HI)
    assert isinstance(streamed, Turn) and streamed.content == "Sunny."


# -- readiness and lifetime --------------------------------------------------------------------


async def test_a_loading_engine_streams_once_loaded() -> None:
    fake = FakeEngine(ready=False)
    assert not fake.ready
    with pytest.raises(TimeoutError):
        fake.wait_ready(0)
    task = asyncio.ensure_future(drain(fake))
    await asyncio.sleep(0.05)
    assert not task.done()
    fake.finish_loading()
    assert collect(await task).content == "ok"


async def test_a_load_error_is_raised_by_wait_ready_and_requests() -> None:
    fake = FakeEngine(ready=False)
    fake.finish_loading(mlxnb.ModelLoadError("bad weights"))
    assert fake.ready
    with pytest.raises(mlxnb.ModelLoadError):
        fake.wait_ready()
    with pytest.raises(mlxnb.ModelLoadError):
        await fake.await_ready()
    with pytest.raises(mlxnb.ModelLoadError):
        await drain(fake)


def test_repr_and_context_manager() -> None:
    with FakeEngine([fake_reply("x")], model_id="acme/m") as fake:
        assert repr(fake) == "FakeEngine('acme/m', ready, scripted=1)"
    assert fake.closed and "closed" in repr(fake)


# -- the fake and the real engine behave alike ------------------------------------------------


@pytest.fixture(params=["fake", "real"])
def make_engine(
    request: pytest.FixtureRequest, engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> Callable[[str, list[Event]], tuple[Any, dict[str, Any]]]:
    """``make_engine(forced_text, scripted_events)`` → an engine and the options for a request.

    The real engine is forced to say ``forced_text``; the fake streams ``scripted_events``.
    """

    def make(text: str, events: list[Event]) -> tuple[Any, dict[str, Any]]:
        if request.param == "real":
            return engine, {"logits_processors": [force(text)]}
        return FakeEngine([events]), {}

    return make


def shape(events: list[Event]) -> list[tuple[str, tuple[str, ...]]]:
    """Event kinds in order with runs collapsed, each with its wire-form keys."""
    return [
        (kind, tuple(dataclasses.asdict(next(group))))
        for kind, group in itertools.groupby(events, key=lambda e: e.type)
    ]


async def consumer(engine: Any, **options: Any) -> tuple[list[Event], Turn]:
    """Code written against the seam: stream a tool-using turn and fold it."""
    await engine.await_ready()
    events = [event async for event in engine.stream(HI, [WEATHER_TOOL], None, **options)]
    return events, collect(events)


async def test_the_same_consumer_sees_the_same_shape_from_fake_and_real_engine(
    make_engine: Callable[[str, list[Event]], tuple[Any, dict[str, Any]]],
) -> None:
    scripted = fake_reply(CONTENT, reasoning=REASONING, tool_calls=[("get_weather", ARGUMENTS)])
    engine, options = make_engine(FORCED, scripted)
    events, turn = await consumer(engine, **options)
    assert shape(events) == shape(scripted)
    assert sum(isinstance(e, Done) for e in events) == 1 and isinstance(events[-1], Done)
    assert (turn.reasoning, turn.content, turn.finish_reason) == (REASONING, CONTENT, "tool_calls")
    assert [(c.index, c.name, c.arguments) for c in turn.tool_calls] == [
        (0, "get_weather", ARGUMENTS)
    ]
    assert turn.tool_calls[0].id and turn.usage.completion_tokens > 0
    assert engine.pending == 0


async def test_the_same_consumer_can_cancel_either_engine(
    make_engine: Callable[[str, list[Event]], tuple[Any, dict[str, Any]]],
) -> None:
    text = "one two three four five six seven eight nine ten " * 5
    engine, options = make_engine(text, fake_reply(text))
    stream = engine.stream(HI, max_tokens=400, **options)
    first = await stream.__anext__()
    await stream.aclose()
    assert isinstance(first, ContentDelta)
    for _ in range(200):
        if engine.pending == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.pending == 0
    if isinstance(engine, FakeEngine):
        assert engine.calls[0].cancelled


@pytest.mark.parametrize(
    ("messages", "options"),
    [([], {}), ([{"content": "no role"}], {}), (HI, {"temprature": 0.5}), (HI, {"top_p": 2.0})],
    ids=["no-messages", "no-role", "unknown-option", "bad-value"],
)
async def test_both_engines_refuse_the_same_malformed_requests(
    make_engine: Callable[[str, list[Event]], tuple[Any, dict[str, Any]]],
    messages: list[dict[str, Any]],
    options: dict[str, Any],
) -> None:
    engine, _ = make_engine("unused", fake_reply("unused"))
    with pytest.raises(InvalidRequestError):
        await anext_event(engine.stream(messages, **options))


async def anext_event(stream: Any) -> Event:
    try:
        event: Event = await stream.__anext__()
    finally:
        await stream.aclose()
    return event


async def test_both_engines_refuse_requests_once_closed(tiny_model_dir: Any) -> None:
    real = mlxnb.load(tiny_model_dir, audit=False)
    for engine in (real, FakeEngine()):
        engine.close()
        engine.close()
        assert engine.closed
        with pytest.raises(EngineClosedError):
            await anext_event(engine.stream(HI))


@pytest.mark.parametrize(
    "name",
    ["stream", "stream_sync", "generate", "agenerate", "wait_ready", "await_ready", "close"],
)
def test_the_fake_restates_the_engine_signatures(name: str) -> None:
    def parameters(function: Any) -> list[tuple[str, Any, Any]]:
        signature = inspect.signature(function)
        return [(p.name, p.kind, p.default) for p in signature.parameters.values()]

    real, fake = getattr(mlxnb.Engine, name), getattr(FakeEngine, name)
    assert parameters(fake) == parameters(real)
    assert inspect.isasyncgenfunction(fake) == inspect.isasyncgenfunction(real)
    assert inspect.iscoroutinefunction(fake) == inspect.iscoroutinefunction(real)


def test_the_fake_has_the_engine_properties() -> None:
    for name in ["ready", "closed", "pending", "supports_thinking", "supports_tools"]:
        assert isinstance(getattr(mlxnb.Engine, name), property)
        assert isinstance(getattr(FakeEngine, name), property), name
    assert FakeEngine().model_id == "fake/model"
