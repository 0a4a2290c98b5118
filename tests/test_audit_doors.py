"""Exactly one audit row per turn, from every door, on success, cancellation and error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb
from mlxnb._audit import AuditLog
from mlxnb._engine.request import RequestMeta
from mlxnb._evaluate import evaluate
from mlxnb.events import ContentDelta
from mlxnb.testing import forced_output

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def audited(tiny_model_dir: Path, tmp_path: Path) -> Iterator[mlxnb.Engine]:
    with (
        AuditLog(tmp_path / "audit.sqlite3") as audit,
        mlxnb.load(tiny_model_dir, audit=audit) as engine,
    ):
        yield engine


def rows(engine: mlxnb.Engine) -> Any:
    return engine.audit.to_pandas()


def test_generate_and_stream_each_write_one_ok_row(audited: mlxnb.Engine) -> None:
    audited.generate(HI, logits_processors=[forced_output(audited.tokenizer, "blocking")])

    async def streamed() -> None:
        proc = forced_output(audited.tokenizer, "<think>why</think>streamed")
        meta = RequestMeta(conversation_id="c1")
        async for _ in audited.stream(HI, logits_processors=[proc], meta=meta):
            pass

    asyncio.run(streamed())
    frame = rows(audited)
    assert len(frame) == 2
    assert list(frame["content"]) == ["blocking", "streamed"]
    assert list(frame["status"]) == ["ok", "ok"]
    assert list(frame["source"]) == ["python", "python"]
    assert frame["reasoning"].iloc[1] == "why"
    assert frame["conversation_id"].iloc[1] == "c1"
    assert (frame["completion_tokens"] > 0).all()
    assert frame["request_id"].is_unique


def test_cancelled_stream_writes_one_cancelled_row(audited: mlxnb.Engine) -> None:
    async def cancel_early() -> None:
        proc = forced_output(audited.tokenizer, "tick " * 500, then="free")
        stream = audited.stream(HI, logits_processors=[proc], max_tokens=1000)
        async for event in stream:
            if isinstance(event, ContentDelta):
                break
        await stream.aclose()

    asyncio.run(cancel_early())
    frame = _wait_for(audited, 1)
    assert list(frame["status"]) == ["cancelled"]
    assert list(frame["finish_reason"]) == ["cancelled"]
    assert 0 < frame["completion_tokens"].iloc[0] < 1000


def explode(tokens: Any, logits: Any) -> Any:
    raise RuntimeError("kaboom")


@pytest.mark.parametrize(
    ("messages", "options", "error_type"),
    [
        (HI, {"logits_processors": [explode]}, "GenerationError"),
        ([], {}, "InvalidRequestError"),
    ],
)
def test_failed_turn_writes_one_error_row(
    audited: mlxnb.Engine, messages: Any, options: dict[str, Any], error_type: str
) -> None:
    with pytest.raises(mlxnb.MlxnbError):
        audited.generate(messages, **options)
    frame = rows(audited)
    assert list(frame["status"]) == ["error"]
    assert list(frame["error_type"]) == [error_type]
    assert frame["error_message"].iloc[0]


def test_refused_request_after_close_is_recorded(audited: mlxnb.Engine) -> None:
    audited.close()
    with pytest.raises(mlxnb.EngineClosedError):
        audited.generate(HI)
    assert list(rows(audited)["error_type"]) == ["EngineClosedError"]


def test_evaluate_writes_one_eval_row_per_prompt_with_run_id(audited: mlxnb.Engine) -> None:
    frame = evaluate(["a", "b", "c"], model=audited, progress=False, max_tokens=2, run_id="r-1")
    audit = rows(audited)
    assert len(audit) == len(frame) == 3
    assert set(audit["source"]) == {"eval"}
    assert set(audit["run_id"]) == {"r-1"}


def _wait_for(engine: mlxnb.Engine, count: int) -> Any:
    import time

    deadline = time.monotonic() + 10
    while len(engine.audit) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows(engine)
