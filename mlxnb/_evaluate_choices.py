"""Multiple-choice rows of :func:`mlxnb.evaluate`: every choice scored, none generated.

Each row's prompt is the context and each of its choices a continuation scored by
:meth:`Engine.score <mlxnb.Engine.score>` (prefill only, the context shared by the choices),
as evaluation harnesses score multiple-choice tasks by log-likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlxnb._engine.scoring import Score
from mlxnb.errors import InvalidRequestError


def row_choices(inputs: Mapping[str, Any], column: str, index: int) -> list[str]:
    """The row's choices: a list of strings in ``column``.

    Raises:
        InvalidRequestError: The column is missing, or not a non-empty list of strings.
    """
    if column not in inputs:
        raise InvalidRequestError(f"choices={column!r}: the prompts have no such column")
    value = inputs[column]
    if isinstance(value, str) or (not isinstance(value, Sequence) and not hasattr(value, "tolist")):
        raise InvalidRequestError(f"row {index}: {column!r} must be a list of choices")
    choices = list(value.tolist() if hasattr(value, "tolist") else value)
    if not choices or not all(isinstance(choice, str) and choice for choice in choices):
        raise InvalidRequestError(f"row {index}: {column!r} must list non-empty strings")
    return choices


def answer_index(answer: Any, choices: Sequence[str]) -> int | None:
    """Which choice ``answer`` means: its index, or its text (``None`` if it names none)."""
    if isinstance(answer, str):
        return choices.index(answer) if answer in choices else None
    try:
        position = int(answer)
    except (TypeError, ValueError):
        return None
    return position if 0 <= position < len(choices) else None


def choice_columns(scores: Sequence[Score], answer: int | None, graded: bool) -> dict[str, Any]:
    """One row's columns: each choice's log-likelihood (raw and per token) and predictions.

    With ``graded``, also whether each prediction is the ``answer``.
    """
    raw = [score.logprob for score in scores]
    per_token = [score.logprob_per_token for score in scores]
    columns: dict[str, Any] = {}
    for i, (value, normalised) in enumerate(zip(raw, per_token, strict=True)):
        columns[f"logprob_{i}"] = value
        columns[f"logprob_norm_{i}"] = normalised
    columns["predicted"] = max(range(len(raw)), key=raw.__getitem__)
    columns["predicted_norm"] = max(range(len(per_token)), key=per_token.__getitem__)
    if graded:
        columns["correct"] = answer is not None and columns["predicted"] == answer
        columns["correct_norm"] = answer is not None and columns["predicted_norm"] == answer
    return columns
