"""Replay on a file migrated from schema 1: old rows hold no request, new rows replay."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_helpers import varied_records, write_old_database

import mlxnb
from mlxnb.testing import forced_output


def test_a_migrated_file_replays_what_it_recorded_since(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "old.sqlite3"
    write_old_database(path, varied_records(3))
    with mlxnb.AuditLog(path) as audit:
        with pytest.raises(mlxnb.InvalidRequestError, match="no request to replay"):
            mlxnb.replay(audit.df, progress=False)
        with mlxnb.load(tiny_model_dir, audit=audit, name="now") as engine:
            force = forced_output(engine.tokenizer, "Recorded after the upgrade.")
            engine.generate([{"role": "user", "content": "Hello?"}], logits_processors=[force])
            frame = audit.df
            assert frame["request"].isna().tolist() == [True, True, True, False]
            result = mlxnb.replay(frame, model=engine, progress=False, max_tokens=3)
    assert result["content_old"].tolist() == ["Recorded after the upgrade."]
    assert result["request_id"].tolist() == frame["request_id"].tolist()[-1:]
    assert result["error"].isna().all()
