"""The LLM-as-judge pass of :func:`mlxnb.evaluate`: a second model grades the finished rows.

The judge's requests run concurrently through its engine's batching, each held to the judge's
JSON schema (a short reasoning, then a score on its scale), and are audited as part of the
run. A row whose answer failed is not graded; a judge request that fails leaves its score
empty and says why in the reasoning column. Each grade is kept with the row (in the run's
checkpoint, when it has one) under a fingerprint of what the judge was asked, so a resumed run
grades only what is new: a row it has not graded, or one whose question, answer, rubric, scale
or judge model changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from mlxnb._engine.request import RequestMeta
from mlxnb.scorers import Judge


def graded_key(name: str) -> str:
    """The hidden row field holding the fingerprint of judge ``name``'s grade."""
    return f"_graded_{name}"


def is_graded_key(field: str) -> bool:
    """Whether a row field is a grade's fingerprint (kept in checkpoints, not in frames)."""
    return field.startswith("_graded_")


def grade_fingerprint(judge: Judge, row: dict[str, Any], model: str) -> str:
    """What a grade depends on: the judge's model, its conversation for the row and schema."""
    asked = [model, judge.messages(row), judge.schema]
    return hashlib.sha256(json.dumps(asked, default=str).encode()).hexdigest()[:24]


async def grade(
    judge: Judge,
    rows: Sequence[dict[str, Any]],
    engine: Any,
    concurrency: int,
    run_id: str,
    *,
    model: str = "",
    keep: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Add ``judge.name`` and ``<name>_reasoning`` to every row, in place.

    Args:
        judge: The judge.
        rows: The finished rows (a resumed run's included).
        engine: The judge's engine.
        concurrency: Most grades asked at once.
        run_id: The run's id, for the audit rows.
        model: The judge model's name (part of each grade's fingerprint).
        keep: Called with each row once it is graded (the run writes it to its checkpoint).
    """
    limit = asyncio.Semaphore(concurrency)
    reasoning, marker = f"{judge.name}_reasoning", graded_key(judge.name)

    async def one(row: dict[str, Any]) -> None:
        fingerprint = grade_fingerprint(judge, row, model)
        if row.get(marker) == fingerprint and row.get(judge.name) is not None:
            return  # graded by an earlier run, asked the same
        row[judge.name], row[reasoning] = None, None
        row.pop(marker, None)
        if row.get("error") is not None:
            return
        async with limit:
            try:
                turn = await engine.agenerate(
                    judge.messages(row),
                    None,
                    False,
                    json_schema=judge.schema,
                    temperature=0.0,
                    max_tokens=judge.max_reasoning_chars + 64,
                    meta=RequestMeta(source="eval", run_id=run_id),
                )
                verdict = json.loads(turn.content)
                row[judge.name] = int(verdict["score"])
                row[reasoning] = str(verdict["reasoning"])
            except Exception as exc:  # one failed grade must not lose the run
                row[reasoning] = f"the judge failed: {type(exc).__name__}: {exc}"
                return  # not kept: a resumed run asks again
        row[marker] = fingerprint
        if keep is not None:
            keep(row)

    await asyncio.gather(*(one(row) for row in rows))
