"""The chat widget's model picker and the conversation's opt-in truncation, on real tiny models
served by a fresh model pool (two distinct random-weight models; no hub)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from widget_fakes import Wire, from_page

import mlxnb
from mlxnb._chat import ContextTrimmed, Conversation
from mlxnb._engine import ModelPool
from mlxnb._engine.download import LoadProgress
from mlxnb._widget import ChatWidget, chat
from mlxnb.errors import ConversationBusyError, ModelNotFoundError
from mlxnb.testing import tiny_model


async def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def models() -> tuple[Path, Path]:
    return tiny_model(), tiny_model(seed=1)


@pytest.fixture
def log() -> Iterator[mlxnb.AuditLog]:
    audit = mlxnb.AuditLog(":memory:")
    yield audit
    audit.close()


@pytest.fixture
def pool(models: tuple[Path, Path], log: mlxnb.AuditLog) -> Iterator[ModelPool]:
    made = ModelPool(engine_options={"audit": log})
    for path in models:
        made.register(path)
    yield made
    made.close()


SHORT = {"max_tokens": 4}


async def test_switching_model_keeps_the_history_and_labels_each_answer(
    pool: ModelPool, log: mlxnb.AuditLog
) -> None:
    first, second = pool.names()
    widget = ChatWidget(pool.handle(first), generation_options=SHORT)
    wire = Wire(widget)
    try:
        assert widget.models == [first, second]
        assert widget.model == first
        await widget.ask("hello")
        widget.model = second
        assert widget.conversation.engine.model_id == second
        assert widget.status == "loading" and not widget.supports_thinking
        await wait_for(lambda: widget.status == "ready")
        stages = [u.get("stage") for u in wire.updates("load_progress") if u]
        assert "loading" in stages, "the new model's load progress was shown"
        assert widget.load_progress == {}
        turn = await widget.ask("and you?")
        assert [m["role"] for m in widget.messages] == ["user", "assistant"] * 2
        assert widget.messages[0]["content"] == "hello"
        assert [t.user for t in widget.turns] == ["hello", "and you?"]
        assert turn.finish_reason in ("length", "stop")
        assert [entry["model"] for entry in widget.transcript] == [first, second]
        # the audit rows name the model that answered each turn
        frame = log.to_pandas()
        assert list(frame["model"]) == [first, second]
        assert frame["conversation_id"].nunique() == 1
        # back to the first model: it is still loaded, so no loading state
        from_page(widget, {"type": "model", "name": first})
        assert widget.model == first and widget.status == "ready"
    finally:
        widget.close()


async def test_a_switch_is_refused_while_a_reply_streams(pool: ModelPool) -> None:
    first, second = pool.names()
    widget = ChatWidget(pool.handle(first), generation_options={"max_tokens": 400})
    wire = Wire(widget)
    try:
        await wait_for(lambda: widget.status == "ready")
        from_page(widget, {"type": "send", "text": "Talk"})
        assert widget.busy
        from_page(widget, {"type": "model", "name": second})
        [refused] = wire.customs("refused")
        assert "stop it before switching" in refused["message"]
        with pytest.raises(ConversationBusyError):
            widget.model = second
        assert widget.model == first and widget.conversation.engine.model_id == first
        widget.stop()
        assert widget._task is not None
        await widget._task
        widget.model = second
        assert widget.model == second
    finally:
        widget.close()


async def test_an_unknown_name_is_refused_with_the_choices(pool: ModelPool) -> None:
    first, second = pool.names()
    widget = ChatWidget(pool.handle(first))
    wire = Wire(widget)
    try:
        from_page(widget, {"type": "model", "name": "nope"})
        [refused] = wire.customs("refused")
        assert "'nope' is not registered" in refused["message"] and second in refused["message"]
        assert widget.model == first
        with pytest.raises(ModelNotFoundError):
            chat("nope", pool=pool)
    finally:
        widget.close()


async def test_names_paths_and_profiles_go_through_the_pool(
    pool: ModelPool, models: tuple[Path, Path]
) -> None:
    first, second = pool.names()
    from mlxnb._engine.profiles import Profile

    pool.add_profile(Profile("terse", first, system="Answer in one word."))
    by_path = chat(models[1], pool=pool, generation_options=SHORT)
    by_profile = chat("terse", pool=pool, generation_options=SHORT)
    try:
        assert by_path.model == second
        assert by_profile.model == "terse"
        assert by_profile.models == [first, second, "terse"]
        await wait_for(lambda: by_profile.status == "ready")
        await by_profile.ask("hi")
        assert by_profile.transcript[-1]["model"] == "terse"
        # the page asks for a fresh list when the picker opens
        pool.add_profile(Profile("chatty", second))
        from_page(by_profile, {"type": "models"})
        assert by_profile.models[-1] == "chatty"
    finally:
        by_path.close()
        by_profile.close()


async def test_an_engine_gets_a_picker_only_with_models(
    engine: mlxnb.Engine, pool: ModelPool
) -> None:
    plain = ChatWidget(engine)
    assert plain.models == [engine.model_id]  # one choice: the page hides the picker
    _, second = pool.names()
    picking = ChatWidget(engine, models=[second], pool=pool, generation_options=SHORT)
    try:
        assert picking.models == [engine.model_id, second]
        picking.model = second
        await wait_for(lambda: picking.status == "ready")
        picking.model = engine.model_id  # back to the very engine it was given
        assert picking.engine is engine
    finally:
        plain.close()
        picking.close()


async def test_progress_from_the_loader_thread_reaches_the_trait(pool: ModelPool) -> None:
    first, _ = pool.names()
    widget = ChatWidget(pool.handle(first))
    try:
        await wait_for(lambda: widget.status == "ready")
        event = LoadProgress(first, "downloading", 50, 200)
        await asyncio.to_thread(widget._show_progress, widget.engine, event)  # as a watcher would
        assert widget.load_progress == {
            "model": first,
            "stage": "downloading",
            "fraction": 0.25,
            "message": "",
        }
    finally:
        widget.close()


# -- truncation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_context(models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first tiny model with a context of 160 tokens."""
    path = tmp_path_factory.mktemp("short") / "tiny-short-context"
    shutil.copytree(models[0], path)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = 160
    (path / "config.json").write_text(json.dumps(config))
    return path


LONG = "Please tell me about the weather and the sea and the mountains today. " * 2


@pytest.fixture
def short_engine(short_context: Path) -> Iterator[mlxnb.Engine]:
    engine = mlxnb.Engine(short_context, audit=False)
    yield engine
    engine.close()


async def test_without_truncation_an_overlong_history_is_a_clear_error(
    short_engine: mlxnb.Engine,
) -> None:
    talk = Conversation(short_engine, generation_options={"max_tokens": 8})
    turns = [await talk.ask(LONG) for _ in range(4)]
    assert turns[0].finish_reason in ("length", "stop")
    assert turns[-1].finish_reason == "error"
    assert turns[-1].error is not None and "ContextLengthError" in turns[-1].error
    assert all(turn.left_out == 0 for turn in turns)


async def test_truncation_keeps_the_system_prompt_and_the_latest_turns(
    short_engine: mlxnb.Engine,
) -> None:
    talk = Conversation(
        short_engine, system="Be brief.", truncate=True, generation_options={"max_tokens": 8}
    )
    sent: list[list[dict[str, Any]]] = []
    stream = short_engine.stream

    def spy(messages: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append([dict(m) for m in messages])
        return stream(messages, *args, **kwargs)

    short_engine.stream = spy  # type: ignore[method-assign]
    try:
        trimmed: list[int] = []
        for n in range(6):
            async for event in talk.stream(f"{n}: {LONG}"):
                if isinstance(event, ContextTrimmed):
                    trimmed.append(event.left_out)
        turns = talk.turns
    finally:
        del short_engine.stream
    assert all(t.finish_reason in ("length", "stop") for t in turns), [t.error for t in turns]
    assert trimmed and all(n % 2 == 0 and n > 0 for n in trimmed)
    assert turns[-1].left_out == trimmed[-1]
    # the history keeps everything; the last request had the system prompt and the newest turns
    assert len(talk.messages) == 1 + 2 * 6
    last = sent[-1]
    assert last[0] == {"role": "system", "content": "Be brief."}
    assert last[-1]["content"] == f"5: {LONG}"
    assert len(last) == len(talk.messages) - 1 - trimmed[-1]  # the answer came after it


async def test_truncation_counts_first_so_no_request_is_refused(
    short_context: Path, tmp_path: Path
) -> None:
    with mlxnb.AuditLog(tmp_path / "audit.sqlite3") as audit:
        with mlxnb.Engine(short_context, audit=audit) as engine:
            talk = Conversation(engine, truncate=True, generation_options={"max_tokens": 8})
            turns = [await talk.ask(f"{n}: {LONG}") for n in range(6)]
        rows = audit.df
    assert turns[-1].left_out > 0  # the history outgrew the context
    assert all(t.finish_reason in ("length", "stop") for t in turns)
    # one request per turn: the left-out turns were counted, not tried and refused
    assert len(rows) == 6 and set(rows["status"]) == {"ok"}


async def test_the_widget_marks_what_was_left_out(short_engine: mlxnb.Engine) -> None:
    widget = ChatWidget(short_engine, truncate=True, generation_options={"max_tokens": 8})
    wire = Wire(widget)
    try:
        for n in range(5):
            await widget.ask(f"{n}: {LONG}")
        marked = [entry.get("left_out", 0) for entry in widget.transcript]
        assert marked[0] == 0 and marked[-1] > 0
        assert all(entry["status"] == "done" for entry in widget.transcript)
        assert ["left_out", marked[-1]] in wire.ops()
    finally:
        widget.close()
