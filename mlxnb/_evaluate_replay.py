"""Replay: what was asked before, asked again (of another model, or with other settings).

Every audit row written with content logging keeps its request (messages, tools, template
settings; ``request`` column) next to the settings it ran with (``sampling``). :func:`replay`
turns such rows back into an :func:`~mlxnb.evaluate` run and returns the old and the new answers
side by side, each scored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from mlxnb._evaluate import evaluate
from mlxnb._evaluate_rows import ScorerSpec, scorer_items
from mlxnb.errors import InvalidRequestError

# Settings an audit row can only count, not repeat (the processors are code, the bias a table).
_NOT_REPEATABLE = ("logits_processors", "logit_bias")
_OLD = ("request_id", "model", "content", "reasoning", "finish_reason", "completion_tokens")


def replay(
    rows: pd.DataFrame,
    *,
    model: Any = None,
    scorers: ScorerSpec = (),
    progress: bool = True,
    **changes: Any,
) -> pd.DataFrame:
    """Ask the recorded turns in ``rows`` again and set the answers side by side.

    Args:
        rows: Audit rows (``audit.df``, or any selection of it) written with content logging.
        model: The model to ask now (a name, a path or an engine; ``None``: the default).
        scorers: Scorers (as :func:`~mlxnb.evaluate` takes them) applied to both answers.
        progress: Show a progress bar.
        **changes: Settings to change for every row (``temperature=0``, ``max_tokens=…``);
            the rest are each row's own, as recorded.

    Returns:
        One row per replayed turn: ``request_id``, ``model_old``, ``content_old``,
        ``reasoning_old``, ``finish_reason_old``, ``completion_tokens_old`` and the scorers'
        ``<name>_old``, then :func:`~mlxnb.evaluate`'s columns for the new answer.

    Raises:
        InvalidRequestError: No row holds a request (written before schema 5, with
            ``log_content=False``, or too long to keep), or a raw-prompt completion.
    """
    if "request" not in rows.columns or rows["request"].isna().all():
        raise InvalidRequestError(
            "these audit rows hold no request to replay: they were written before mlxnb "
            "recorded requests, with log_content=False, or were too long to keep"
        )
    kept = rows[rows["request"].notna()]
    inputs = [_replayable(row) for row in kept.to_dict("records")]
    frame = pd.DataFrame(inputs)
    new = evaluate(
        frame,
        model=model,
        scorers=scorers,
        progress=progress,
        row_options=lambda row: {**row["_options"], **changes},
    )
    for name, scorer in scorer_items(scorers):
        new[f"{name}_old"] = [_scored(scorer, row) for row in inputs]
    result: pd.DataFrame = new.drop(columns=["_options"])
    return result


def _replayable(row: Mapping[str, Any]) -> dict[str, Any]:
    """An evaluate() input row for one audit row: its messages and its recorded settings."""
    asked = json.loads(row["request"])
    if "messages" not in asked:
        raise InvalidRequestError(
            f"request {row['request_id']}: a scoring call (engine.score) is not a chat turn to "
            "replay; pick the rows with endpoint != 'score'"
        )
    if asked.get("prompt") is not None:
        raise InvalidRequestError(
            f"request {row['request_id']}: a raw-prompt completion cannot be replayed as chat"
        )
    settings = json.loads(row["sampling"]) if isinstance(row.get("sampling"), str) else {}
    options = {k: v for k, v in settings.items() if k not in _NOT_REPEATABLE}
    options["tools"] = asked.get("tools")
    options["enable_thinking"] = asked.get("enable_thinking")
    if asked.get("chat_template_kwargs"):
        options["chat_template_kwargs"] = asked["chat_template_kwargs"]
    old = {f"{name}_old": row.get(name) for name in _OLD if name != "request_id"}
    return {
        "request_id": row["request_id"],
        **old,
        "messages": asked["messages"],
        "_options": options,
    }


def _scored(scorer: Any, row: Mapping[str, Any]) -> Any:
    """A scorer's value for the old answer (its row seen as evaluate() would show it)."""
    try:
        return scorer({**row, "content": row.get("content_old") or ""})
    except Exception:  # a scorer that cannot read the old answer scores it as missing
        return None
