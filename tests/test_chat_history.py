"""Changing a Conversation's past on the real engine (fixture model, forced output): continue an
answer cut by ``max_tokens`` (text and vision models), and edit an earlier message (the old
branch kept)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

import mlxnb
from mlxnb import Conversation
from mlxnb.events import ContentDelta
from mlxnb.testing import ForcedOutput, forced_output, tiny_vision_model

Force = Callable[..., ForcedOutput]
STORY = "Once upon a time a small fox lived by the river and"


def scripted(force: Force, *replies: tuple[str, int]) -> Callable[[], Mapping[str, Any]]:
    """One forced reply per request, each with its own ``max_tokens``."""
    pending = list(replies)

    def options() -> Mapping[str, Any]:
        text, max_tokens = pending.pop(0)
        return {"logits_processors": [force(text)], "max_tokens": max_tokens}

    return options


@pytest.fixture(scope="module")
def vision_engine() -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_vision_model(), audit=False) as shared:
        yield shared


@pytest.fixture(params=["text", "vision"])
def either(request: pytest.FixtureRequest) -> mlxnb.Engine:
    """The shared text engine, or a vision model's (its prompts render through mlx-vlm)."""
    name = "engine" if request.param == "text" else "vision_engine"
    chosen: mlxnb.Engine = request.getfixturevalue(name)
    return chosen


@pytest.fixture
def forcing(either: mlxnb.Engine) -> Force:
    def make(text: str) -> ForcedOutput:
        return forced_output(either.tokenizer, text)

    return make


async def test_continue_carries_on_in_the_same_assistant_message(
    either: mlxnb.Engine, forcing: Force
) -> None:
    engine, force = either, forcing
    chat = Conversation(
        engine,
        system="Tell stories.",
        generation_options=scripted(force, (STORY, 6), (" it was happy.", 50)),
    )
    cut = await chat.ask("A story?")
    assert cut.finish_reason == "length" and 0 < len(cut.content) < len(STORY)
    partial = chat.messages
    # the prompt of a continuation ends inside the answer: no end of turn, no new user turn
    prompt = engine._loaded_backend().render(partial, None, None, {"continue_final_message": True})
    rendered = engine.tokenizer.decode(prompt.tokens)
    assert rendered.endswith(cut.content) and rendered.count("<|im_start|>assistant") == 1
    deltas: list[str] = []
    async for event in chat.stream_continue():
        if isinstance(event, ContentDelta):
            deltas.append(event.text)
    joined = chat.turns[-1]
    assert "".join(deltas) == " it was happy."
    assert joined.content == cut.content + " it was happy."
    assert joined.finish_reason == "stop" and len(joined.rounds) == 1
    assert len(chat.turns) == 1
    assert joined.usage.completion_tokens == cut.usage.completion_tokens + 5
    continued = joined.rounds[0].usage.prompt_tokens - cut.usage.prompt_tokens
    assert continued == len(prompt.tokens), "the continuation was asked with that prompt"
    assert joined.seconds >= cut.seconds
    assert chat.messages == [
        {"role": "system", "content": "Tell stories."},
        {"role": "user", "content": "A story?"},
        {"role": "assistant", "content": joined.content},
    ]


THOUGHT = (
    "<think>\nFirst I list the foxes by the river, then I count them.\n</think>\n\nThree foxes."
)


async def test_an_answer_cut_while_thinking_carries_on_the_thought(
    either: mlxnb.Engine, forcing: Force
) -> None:
    engine, force = either, forcing
    cut_after = 7  # tokens: inside the thinking block
    tokens = engine.tokenizer.encode(THOUGHT, add_special_tokens=False)
    rest = engine.tokenizer.decode(tokens[cut_after:])
    reference = await Conversation(engine, generation_options=scripted(force, (THOUGHT, 60))).ask(
        "Foxes?"
    )
    chat = Conversation(
        engine, generation_options=scripted(force, (THOUGHT, cut_after), (rest, 60))
    )
    cut = await chat.ask("Foxes?")
    assert cut.finish_reason == "length" and cut.content == "" and cut.reasoning
    # The continuation's prompt ends inside the thinking block, with the thought so far.
    backend = engine._loaded_backend()
    prompt = backend.render(chat.messages, None, None, {"continue_final_message": True})
    rendered = engine.tokenizer.decode(prompt.tokens)
    assert rendered.endswith("<think>\n" + cut.reasoning)
    assert prompt.initial_state == "reasoning"
    joined = await chat.continue_answer()
    assert (joined.reasoning, joined.content) == (reference.reasoning, reference.content)
    assert joined.finish_reason == "stop"
    assert chat.messages[-1] == {
        "role": "assistant",
        "content": reference.content,
        "reasoning_content": reference.reasoning,
    }


async def test_only_an_answer_cut_by_max_tokens_continues(
    engine: mlxnb.Engine, force: Force
) -> None:
    chat = Conversation(engine, generation_options=scripted(force, ("Done.", 50)))
    with pytest.raises(ValueError, match="cut short by max_tokens"):
        await chat.continue_answer()
    await chat.ask("hi")
    with pytest.raises(ValueError, match="cut short by max_tokens"):
        await chat.continue_answer()


async def test_continue_can_be_cut_again_and_continued_again(
    engine: mlxnb.Engine, force: Force
) -> None:
    chat = Conversation(
        engine, generation_options=scripted(force, (STORY, 4), (STORY, 4), (" end.", 20))
    )
    first = await chat.ask("Go")
    second = await chat.continue_answer()
    assert second.finish_reason == "length"
    third = await chat.continue_answer()
    assert third.finish_reason == "stop"
    assert third.content == first.content + second.content[len(first.content) :] + " end."
    assert [m["role"] for m in chat.messages] == ["user", "assistant"]


async def test_edit_and_resend_replaces_later_turns_and_keeps_the_branch(
    engine: mlxnb.Engine, force: Force
) -> None:
    chat = Conversation(
        engine,
        system="sys",
        generation_options=scripted(force, ("one", 20), ("two", 20), ("three", 20), ("edited", 20)),
    )
    await chat.ask("first")
    await chat.ask("second")
    await chat.ask("third")
    before = chat.messages
    turn = await chat.edit(1, "second, reworded")
    assert turn.content == "edited" and turn.user == "second, reworded"
    assert [t.user for t in chat.turns] == ["first", "second, reworded"]
    assert [m["content"] for m in chat.messages] == [
        "sys",
        "first",
        "one",
        "second, reworded",
        "edited",
    ]
    assert chat.history_branches == [before]
    chat.history_branches[0].clear()  # a copy: the kept branch is not changed through it
    assert chat.history_branches == [before]
    with pytest.raises(ValueError, match="no turn 5"):
        await chat.edit(5, "x")
    chat.clear()
    assert chat.history_branches == []


async def test_an_edit_keeps_the_images_of_the_message(engine: mlxnb.Engine) -> None:
    from mlxnb._chat_history import edited

    image = object()
    message = {
        "role": "user",
        "content": [{"type": "image", "image": image}, {"type": "text", "text": "a"}],
    }
    assert edited(message, "b") == {
        "role": "user",
        "content": [{"type": "image", "image": image}, {"type": "text", "text": "b"}],
    }
