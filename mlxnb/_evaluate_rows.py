"""Rows of an evaluation: inputs expanded into tasks, finished turns into result columns.

Pure data handling (no engine, no event loop) for :mod:`mlxnb._evaluate`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlxnb._images import PYTHON_POLICY, Image, load_images, user_message
from mlxnb.errors import InvalidRequestError
from mlxnb.events import Turn

Prompts = Sequence[str] | Sequence[Sequence[Mapping[str, Any]]] | pd.DataFrame
ScorerSpec = Sequence[Callable[[Mapping[str, Any]], Any]] | Mapping[str, Callable[..., Any]]

RESULT_DTYPES: dict[str, Any] = {
    "content": pd.StringDtype(),
    "reasoning": pd.StringDtype(),
    "tool_calls": pd.StringDtype(),
    "finish_reason": pd.StringDtype(),
    "prompt_tokens": pd.Int64Dtype(),
    "completion_tokens": pd.Int64Dtype(),
    "cached_tokens": pd.Int64Dtype(),
    "time_to_first_token": pd.Float64Dtype(),
    "duration": pd.Float64Dtype(),
    "tokens_per_s": pd.Float64Dtype(),
    "error": pd.StringDtype(),
}
LOGPROB_DTYPES: dict[str, Any] = dict.fromkeys(
    ("mean_logprob", "min_logprob", "perplexity"), pd.Float64Dtype()
)
"""Columns of a run with ``logprobs=True``: over each answer's generated tokens."""


@dataclass(frozen=True)
class RowTask:
    """One request of an evaluation run.

    Attributes:
        key: Stable identity, used by the checkpoint to skip finished rows.
        order: Position in the output.
        inputs: The input row's columns (prompt, expected, …).
        model: Label of the model.
        params: Sampling parameters of this grid point.
        sample: Which of the ``n`` samples.
        messages: The chat messages sent.
    """

    key: str
    order: int
    inputs: dict[str, Any]
    model: str
    params: dict[str, Any]
    sample: int
    messages: list[dict[str, Any]]


def input_rows(
    prompts: Prompts, system: str | None, images: str | None = None
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each input as ``(its columns, the chat messages to send)``, system prompt first.

    Args:
        prompts: Strings, message lists, or a DataFrame with a ``prompt``/``messages`` column.
        system: A system prompt put first.
        images: A DataFrame column of images shown with each row's prompt (an image, a list of
            them, or None); loaded and checked here, before anything runs.

    Raises:
        InvalidRequestError: No prompt column, no such image column, or an unusable image.
    """
    if isinstance(prompts, pd.DataFrame):
        if "messages" in prompts.columns:
            column = "messages"
        elif "prompt" in prompts.columns:
            column = "prompt"
        else:
            raise InvalidRequestError("a prompts DataFrame needs a 'prompt' or 'messages' column")
        if images is not None and images not in prompts.columns:
            raise InvalidRequestError(f"images={images!r}: the DataFrame has no such column")
        records = prompts.to_dict("records")
        items = [({str(k): v for k, v in r.items()}, r[column]) for r in records]
    else:
        if images is not None:
            raise InvalidRequestError("images= names a column: pass the prompts as a DataFrame")
        items = [({"prompt": p} if isinstance(p, str) else {"messages": p}, p) for p in prompts]
    rows = []
    for index, (inputs, prompt) in enumerate(items):
        shown = _row_images(inputs.get(images) if images else None, index)
        if isinstance(prompt, str):
            messages: list[dict[str, Any]] = [user_message(prompt, shown)]
        else:
            messages = [dict(m) for m in prompt]
            if shown is not None:
                raise InvalidRequestError(f"row {index}: images= needs a 'prompt' column")
        if system is not None:
            messages = [{"role": "system", "content": system}, *messages]
        rows.append((inputs, messages))
    return rows


def _row_images(value: Any, index: int) -> list[Image] | None:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: no image
        return None
    try:
        return load_images(value, policy=PYTHON_POLICY)
    except InvalidRequestError as error:
        raise InvalidRequestError(f"row {index}: {error}") from error


def grid_points(grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the swept parameters (one empty point without a grid)."""
    if not grid:
        return [{}]
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def task_key(model: str, params: Mapping[str, Any], index: int, sample: int, messages: Any) -> str:
    """A stable identity for one request, so a checkpoint can skip it on resume."""
    payload = json.dumps([model, params, index, sample, messages], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


def row_seed(seed: int, key: str) -> int:
    """The seed of the row ``key`` in a run seeded with ``seed`` (rows differ; runs repeat)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def scorer_items(scorers: ScorerSpec) -> list[tuple[str, Callable[..., Any]]]:
    """Scorers as ``(column name, function)`` pairs."""
    if isinstance(scorers, Mapping):
        return list(scorers.items())
    return [(getattr(s, "__name__", f"score_{i}"), s) for i, s in enumerate(scorers)]


def result_columns(
    turn: Turn | None, duration: float, error: BaseException | None
) -> dict[str, Any]:
    """The result columns of one row: the turn's text and counts, or the error that ended it."""
    if turn is None:
        return {"duration": duration, "error": f"{type(error).__name__}: {error}"}
    usage = turn.usage
    return {
        "content": turn.content,
        "reasoning": turn.reasoning,
        "tool_calls": turn.tool_calls_json() if turn.tool_calls else None,
        "finish_reason": turn.finish_reason,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "time_to_first_token": usage.time_to_first_token,
        "duration": duration,
        "tokens_per_s": usage.generation_tps,
        "error": turn.error,
        **logprob_columns(turn),
    }


def logprob_columns(turn: Turn) -> dict[str, float]:
    """Mean and lowest log-probability of the turn's tokens and its perplexity (if it has them)."""
    values = [entry.logprob for entry in turn.logprobs]
    if not values:
        return {}
    mean = sum(values) / len(values)
    return {"mean_logprob": mean, "min_logprob": min(values), "perplexity": math.exp(-mean)}
