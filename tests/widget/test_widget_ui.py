"""ChatWidget in Python: the messages it sends, its handlers and its state (no browser)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import ipywidgets
import pytest
from widget_fakes import Script, Wire, from_page
from widget_scripts import ANSWER, BOOM_CALL, THINK_ANSWER, WEATHER_CALL, boom, get_weather

import mlxnb
from mlxnb._engine import ModelPool
from mlxnb._widget import ChatWidget, chat
from mlxnb._widget.protocol import apply_op
from mlxnb.errors import ModelNotFoundError
from mlxnb.events import ContentDelta, Done, Event, Usage
from mlxnb.testing import FakeEngine

Make = Callable[..., tuple[ChatWidget, Wire]]


@pytest.fixture
def make(engine: mlxnb.Engine, script: Script) -> Iterator[Make]:
    """``make(*replies, **widget_options)`` → a widget on the real engine and its comm tap."""
    made: list[ChatWidget] = []

    def build(*replies: str, engine_: Any = engine, **options: Any) -> tuple[ChatWidget, Wire]:
        if replies:
            options["generation_options"] = script(*replies)
        widget = ChatWidget(engine_, **options)
        made.append(widget)
        return widget, Wire(widget)

    yield build
    for widget in made:
        widget.close()


def replay(
    entry_id: str, user: str, ops: list[list[Any]], model: str | None = None
) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "id": entry_id,
        "user": user,
        "images": [],
        "parts": [],
        "status": "streaming",
        "error": None,
        "stats": None,
    }
    if model is not None:
        turn["model"] = model
    for op in ops:
        apply_op(turn, op)
    return turn


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_the_comm_handler_is_not_overridden() -> None:
    assert ChatWidget._handle_msg is ipywidgets.Widget._handle_msg


def test_the_bundled_front_end_is_used(engine: mlxnb.Engine) -> None:
    widget = ChatWidget(engine)
    assert "mlxnb-chat" in str(widget._esm)
    assert "--jp-layout-color0" in str(widget._css)
    widget.close()


async def test_initial_state(make: Make, engine: mlxnb.Engine) -> None:
    widget, _ = make(tools=[get_weather])
    assert (widget.status, widget.error, widget.transcript) == ("ready", "", [])
    assert widget.model_name == engine.model_id
    assert widget.model_id == widget.comm.comm_id, "ipywidgets' model_id must stay the comm id"
    assert widget.supports_thinking is True
    assert widget.supports_images is False, "the tiny model is a text-only model"
    assert widget.tool_names == ["get_weather"]


async def test_a_message_from_the_page_streams_then_lands_in_the_transcript(make: Make) -> None:
    widget, wire = make(THINK_ANSWER)
    started = time.perf_counter()
    from_page(widget, {"type": "send", "text": "Show me code"})
    assert time.perf_counter() - started < 0.05, "the handler must return at once"
    assert widget.busy
    assert widget._task is not None
    turn = await widget._task
    assert turn is not None
    [start] = wire.customs("start")
    entry = widget.transcript[-1]
    assert start == {
        "type": "start",
        "turn": {"id": entry["id"], "user": "Show me code", "images": [], "model": widget.model},
    }
    assert entry["model"] == widget.engine.model_id
    assert replay(entry["id"], "Show me code", wire.ops(), model=widget.model) == entry
    assert [p["kind"] for p in entry["parts"]] == ["thinking", "content"]
    assert entry["parts"][0]["text"].strip() == "The user wants code."
    assert entry["parts"][0]["seconds"] > 0
    assert entry["parts"][1]["text"] == ANSWER
    limit = widget.engine.context_length
    assert isinstance(limit, int) and limit > entry["stats"]["context_tokens"] > 0
    stats = {**turn.stats(), "context_limit": limit}
    assert (entry["status"], entry["error"], entry["stats"]) == ("done", None, stats)
    assert len(wire.customs("ops")) >= 2
    kinds = [(k, sorted(v)) if k == "update" else (k, v["type"]) for k, v in wire.log]
    last_ops = max(i for i, item in enumerate(kinds) if item == ("custom", "ops"))
    # the ended turn and the unlocked input arrive together, after the turn's last ops
    assert kinds.index(("update", ["status", "transcript"])) > last_ops
    assert wire.updates("status") == ["generating", "ready"]
    assert widget.messages[-1]["content"] == ANSWER


async def test_stop_from_the_page_ends_a_long_answer_early(make: Make) -> None:
    widget, wire = make("word " * 300)
    from_page(widget, {"type": "send", "text": "Talk"})
    await wait_for(lambda: sum(len(op[1]) for op in wire.ops() if op[0] == "text") > 20)
    stopped = time.perf_counter()
    from_page(widget, {"type": "stop"})
    assert widget._task is not None
    turn = await widget._task
    assert time.perf_counter() - stopped < 0.5
    assert turn is not None and turn.finish_reason == "cancelled"
    entry = widget.transcript[-1]
    assert entry["status"] == "cancelled"
    assert 4 <= len(entry["parts"][0]["text"].split()) < 150
    assert entry["stats"]["finish_reason"] == "cancelled"
    assert widget.status == "ready" and not widget.busy


async def test_closing_the_widget_stops_generation(make: Make) -> None:
    widget, wire = make("word " * 300)
    task = widget._start("Talk")
    await wait_for(lambda: len(wire.ops()) > 2)
    widget.close()
    turn = await task
    assert turn is not None and turn.finish_reason == "cancelled"


async def test_tool_calls_show_their_result_and_a_raising_tool_its_error(make: Make) -> None:
    widget, _ = make(
        WEATHER_CALL, BOOM_CALL, "Paris is sunny; Mars failed.", tools=[get_weather, boom]
    )
    turn = await widget.ask("Weather in Paris and on Mars?")
    assert turn.content == "Paris is sunny; Mars failed."
    tools = [p for p in widget.transcript[-1]["parts"] if p["kind"] == "tool"]
    assert [(t["key"], t["name"], t["arguments"], t["status"]) for t in tools] == [
        ("0-0", "get_weather", {"city": "Paris"}, "done"),
        ("1-0", "boom", {"reason": "Mars"}, "error"),
    ]
    assert tools[0]["result"] == '{"city": "Paris", "sky": "sunny"}'
    assert '"get_weather"' in tools[0]["raw"]
    assert tools[1]["error"] == "RuntimeError: no data for Mars"
    assert widget.transcript[-1]["parts"][-1] == {
        "kind": "content",
        "text": "Paris is sunny; Mars failed.",
    }
    assert widget.transcript[-1]["stats"]["rounds"] == 3


async def test_regenerate_replaces_the_last_answer(make: Make) -> None:
    widget, _ = make("first", "second")
    await widget.ask("q")
    first_id = widget.transcript[0]["id"]
    from_page(widget, {"type": "regenerate"})
    assert widget._task is not None
    await widget._task
    assert len(widget.transcript) == 1
    assert widget.transcript[0]["id"] != first_id
    assert widget.transcript[0]["parts"] == [{"kind": "content", "text": "second"}]
    assert widget.messages == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "second"},
    ]


async def test_clear_forgets_everything_but_the_system_prompt(make: Make) -> None:
    widget, _ = make("one", system="Be kind.")
    await widget.ask("hi")
    from_page(widget, {"type": "clear"})
    assert widget.transcript == []
    assert widget.messages == [{"role": "system", "content": "Be kind."}]
    assert widget.to_dataframe().empty


async def test_requests_while_busy_are_refused_with_a_message(make: Make) -> None:
    widget, wire = make("word " * 200)
    from_page(widget, {"type": "send", "text": "one"})
    for request in ({"type": "send", "text": "two"}, {"type": "clear"}, {"type": "regenerate"}):
        from_page(widget, request)
    assert [m["message"] for m in wire.customs("refused")] == [
        "a reply is being generated; stop it first"
    ] * 3
    widget.stop()
    assert widget._task is not None
    await widget._task
    assert [t["user"] for t in widget.transcript] == ["one"]


async def test_ask_returns_the_turn_and_fills_history(make: Make) -> None:
    widget, _ = make(THINK_ANSWER)
    turn = await widget.ask("code please")
    assert turn.content == ANSWER
    assert widget.turns == (turn,)
    assert widget.to_dataframe().iloc[0].content == ANSWER
    assert widget.transcript[0]["user"] == "code please"


async def test_loading_then_ready(make: Make) -> None:
    fake = FakeEngine(ready=False, supports_thinking=False)
    widget, _ = make(engine_=fake)
    assert widget.status == "loading"
    with pytest.raises(RuntimeError, match="still loading"):
        widget._start("hi")
    fake.finish_loading()
    await wait_for(lambda: widget.status == "ready")
    assert widget.supports_thinking is False
    assert (await widget.ask("hi")).content == "ok"


async def test_a_missing_model_is_reported_in_the_chat() -> None:
    pool = ModelPool(engine_options={"audit": False})
    widget = chat("/nonexistent/model-dir", pool=pool)
    wire = Wire(widget)
    try:
        await wait_for(lambda: widget.status != "loading")
        assert widget.status == "error"
        assert widget.error.startswith("Could not load model-dir: ModelNotFoundError")
        assert "/nonexistent/model-dir" in widget.error
        from_page(widget, {"type": "send", "text": "hi"})
        assert wire.customs("refused")[0]["message"] == widget.error
        with pytest.raises(ModelNotFoundError):
            await widget.ask("hi")
    finally:
        widget.close()
        pool.close()


@pytest.mark.parametrize(
    ("supports", "toggle", "sent"), [(True, True, True), (True, False, False), (False, True, None)]
)
async def test_the_thinking_toggle_reaches_the_engine(
    make: Make, supports: bool, toggle: bool, sent: bool | None
) -> None:
    fake = FakeEngine(supports_thinking=supports)
    widget, _ = make(engine_=fake)
    widget.enable_thinking = toggle
    await widget.ask("hi")
    assert fake.calls[0].enable_thinking is sent
    assert fake.calls[0].meta.source == "widget"


class PacedEngine(FakeEngine):
    """Streams ``count`` one-word tokens at ``rate`` tokens per second, like a fast model."""

    def __init__(self, count: int, rate: float) -> None:
        super().__init__()
        self.count, self.rate = count, rate
        self.finished_at = 0.0

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        start = time.perf_counter()
        for i in range(self.count):
            ahead = start + i / self.rate - time.perf_counter()
            if ahead > 0.002:
                await asyncio.sleep(ahead)
            yield ContentDelta(f"w{i} ")
        self.finished_at = time.perf_counter()
        yield Done("stop", Usage(completion_tokens=self.count))


async def test_a_fast_stream_is_coalesced_and_arrives_whole(make: Make) -> None:
    paced = PacedEngine(count=2000, rate=2000.0)
    widget, wire = make(engine_=paced)
    stamps: list[float] = []
    original = widget.send

    def send(content: dict[str, Any], buffers: Any = None) -> None:
        stamps.append(time.perf_counter())
        original(content, buffers)

    widget.send = send  # type: ignore[method-assign]
    started = time.perf_counter()
    turn = await widget.ask("go")
    seconds = paced.finished_at - started
    text = "".join(op[1] for op in wire.ops() if op[0] == "text")
    assert text == "".join(f"w{i} " for i in range(2000)) == turn.content
    batches = len(wire.customs("ops"))
    # N messages are N - 1 intervals apart: at most 30 a second means (N - 1) / seconds <= 30.
    assert (batches - 1) / seconds <= 30, f"{batches} messages in {seconds:.2f} s"
    assert stamps[-1] - paced.finished_at < 0.05
