"""The LLM-as-judge pass of :func:`mlxnb.evaluate`: a second model grades the finished rows.

The judge's requests run concurrently through its engine's batching, each held to the judge's
JSON schema (a short reasoning, then a score on its scale), and are audited as part of the
run. A row whose answer failed is not graded; a judge request that fails leaves its score
empty and says why in the reasoning column.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from mlxnb._engine.request import RequestMeta
from mlxnb.scorers import Judge


async def grade(
    judge: Judge, rows: Sequence[dict[str, Any]], engine: Any, concurrency: int, run_id: str
) -> None:
    """Add ``judge.name`` and ``<name>_reasoning`` to every row, in place."""
    limit = asyncio.Semaphore(concurrency)
    reasoning = f"{judge.name}_reasoning"

    async def one(row: dict[str, Any]) -> None:
        row[judge.name], row[reasoning] = None, None
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

    await asyncio.gather(*(one(row) for row in rows))
