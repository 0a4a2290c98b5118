"""One real turn through the engine lands as one audit row (the door tests live elsewhere)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import mlxnb
from mlxnb._audit import AuditLog
from mlxnb.testing import forced_output


@pytest.mark.timeout(300)
def test_engine_generate_writes_one_row(tiny_model_dir: Path, tmp_path: Path) -> None:
    with AuditLog(tmp_path / "engine.sqlite3") as log:
        before = datetime.now(timezone.utc)
        with mlxnb.load(tiny_model_dir, audit=log) as engine:
            proc = forced_output(engine.tokenizer, "<think>\nhmm\n</think>\n\nHello audit")
            turn = engine.generate([{"role": "user", "content": "hi"}], logits_processors=[proc])
        assert len(log) == 1
        row = log.df.iloc[0]
    assert (row["source"], row["model"], row["status"]) == ("python", engine.model_id, "ok")
    assert row["finish_reason"] == turn.finish_reason
    assert (row["content"], row["reasoning"]) == (turn.content, turn.reasoning)
    assert row["completion_tokens"] == turn.usage.completion_tokens > 0
    assert row["prompt_tokens"] == turn.usage.prompt_tokens > 0
    assert before - timedelta(seconds=1) <= row["started_at"] <= datetime.now(timezone.utc)
    assert 0 < row["duration_s"] < 300
