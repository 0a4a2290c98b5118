"""What the worker's inbox holds besides requests: callers' questions, and the close marker."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

CLOSE = object()
"""Put in the inbox to end the worker's loop."""


@dataclass(frozen=True)
class Question:
    """A caller's question, answered on the worker thread between steps."""

    ask: Callable[[], Any]
    answer: Future[Any] = field(default_factory=Future)


@dataclass(frozen=True)
class ModelQuestion:
    """A question that runs the model (``job(model)``): on a sharded model every rank runs it."""

    job: Callable[[Any], Any]
    answer: Future[Any] = field(default_factory=Future)


def answer(question: Question) -> None:
    """Answer ``question`` (an error goes to the asker; the worker carries on)."""
    try:
        question.answer.set_result(question.ask())
    except Exception as error:
        question.answer.set_exception(error)
