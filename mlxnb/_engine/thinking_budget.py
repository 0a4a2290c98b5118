"""A budget for thinking: after so many tokens inside a thinking block, close it.

The budget is an mlx-lm logits processor: it follows the generated tokens, counts those inside
the block, and once the budget is spent it forces the model's closing marker (token by token
when the marker spans several), after which the answer is generated as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_BEFORE, _THINKING, _CLOSING, _DONE = range(4)


class ThinkingBudget:
    """Force the end of thinking after ``budget`` tokens of it.

    Args:
        budget: Most tokens inside the thinking block (0: close it at once).
        start: The token ids that open a thinking block.
        end: The token ids that close it.
        thinking: Whether the prompt already opened the block (the output starts in it).
    """

    def __init__(
        self, budget: int, start: Sequence[int], end: Sequence[int], *, thinking: bool
    ) -> None:
        self.budget = budget
        self._start, self._end = tuple(start), tuple(end)
        self._window = max(len(self._start), len(self._end))
        self._state = _THINKING if thinking else _BEFORE
        self._recent: tuple[int, ...] = ()
        self._spent = 0
        self._closing = 0
        self._calls = 0

    @property
    def forced(self) -> bool:
        """Whether the budget ran out and the block was (or is being) closed by force."""
        return self._closing > 0 or self._state == _CLOSING

    def __call__(self, tokens: Any, logits: Any) -> Any:
        if self._calls:
            self._see(int(tokens[-1].item()))
        self._calls += 1
        if self._state == _THINKING and self._spent >= self.budget:
            self._state = _CLOSING
        if self._state != _CLOSING:
            return logits
        import mlx.core as mx

        wanted = self._end[self._closing]
        allowed = mx.arange(logits.shape[-1]) == wanted
        return mx.where(
            allowed, mx.zeros_like(logits), mx.full(logits.shape, -mx.inf, logits.dtype)
        )

    def _see(self, token: int) -> None:
        self._recent = (*self._recent, token)[-self._window :]
        if self._state == _CLOSING:
            self._closing += 1
            if self._closing == len(self._end):
                self._state = _DONE
        elif self._state == _THINKING:
            self._spent += 1
            if self._recent[-len(self._end) :] == self._end:
                self._state = _DONE
        elif self._state == _BEFORE and self._recent[-len(self._start) :] == self._start:
            self._state = _THINKING
