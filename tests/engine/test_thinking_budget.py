"""A thinking budget closes the thinking block after so many tokens, then the answer follows."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mlxnb
from mlxnb._engine.thinking_budget import ThinkingBudget
from mlxnb.testing import ForcedOutput

ASK = [{"role": "user", "content": "Think, then answer."}]


@pytest.mark.parametrize("budget", [0, 5, 20])
def test_the_block_closes_after_the_budget_and_the_answer_follows(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput], budget: int
) -> None:
    # The random-weight model never closes a block by itself: only the budget can.
    turn = engine.generate(
        ASK, thinking_budget=budget, max_tokens=60, logits_processors=[force("<think>\n", "free")]
    )
    opener = len(engine.tokenizer.encode("<think>\n"))
    assert turn.usage.reasoning_tokens <= opener + budget + 1  # the markers count too
    assert turn.usage.completion_tokens > turn.usage.reasoning_tokens  # an answer followed


def test_without_a_budget_thinking_runs_on(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    turn = engine.generate(ASK, max_tokens=40, logits_processors=[force("<think>\n", "free")])
    assert turn.usage.reasoning_tokens == turn.usage.completion_tokens == 40


def test_a_budget_leaves_output_without_thinking_alone(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    turn = engine.generate(ASK, thinking_budget=0, logits_processors=[force("Plain answer.")])
    assert (turn.content, turn.reasoning, turn.usage.reasoning_tokens) == ("Plain answer.", "", 0)


def test_a_negative_budget_is_refused(engine: mlxnb.Engine) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="thinking_budget"):
        engine.generate(ASK, thinking_budget=-1)


class Tokens(list[int]):
    """What the processor reads of the context: its last item's ``item()``."""

    def __getitem__(self, index: object) -> object:
        value = super().__getitem__(index)  # type: ignore[index]
        return _Item(value) if isinstance(value, int) else value


class _Item:
    def __init__(self, value: int) -> None:
        self.value = value

    def item(self) -> int:
        return self.value


def test_a_closing_marker_of_several_tokens_is_forced_in_order() -> None:
    import mlx.core as mx

    budget = ThinkingBudget(2, start=[7], end=[8, 9], thinking=True)
    logits = mx.zeros((1, 12))
    forced = []
    context = Tokens([1])
    for _ in range(6):
        out = budget(context, logits)
        best = int(mx.argmax(out, axis=-1).item())
        allowed = int(mx.sum(out > -mx.inf).item())
        forced.append(best if allowed == 1 else None)
        context.append(best if allowed == 1 else 3)
    assert forced == [None, None, 8, 9, None, None]
    assert budget.forced
