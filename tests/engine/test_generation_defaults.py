"""Sampling defaults: the request, then the model's generation_config.json, then mlxnb's."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlxnb._audit import AuditLog
from mlxnb._engine.backend import generation_defaults
from mlxnb._engine.engine import Engine
from mlxnb.testing import forced_output

HI = [{"role": "user", "content": "Hi"}]


def model_with(tiny_model_dir: Path, tmp_path: Path, config: dict[str, Any]) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "generation_config.json").write_text(json.dumps(config))
    return copy


def sampling_of_last_row(audit: AuditLog) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads(audit.df["sampling"].iloc[-1])
    return settings


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path / "audit.sqlite3") as log:
        yield log


def test_the_generation_config_sets_what_the_request_does_not(
    tiny_model_dir: Path, tmp_path: Path, audit: AuditLog
) -> None:
    recommended = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20}
    with Engine(model_with(tiny_model_dir, tmp_path, recommended), audit=audit) as engine:
        engine.generate(HI, max_tokens=2)
        used = sampling_of_last_row(audit)
        assert (used["temperature"], used["top_p"], used["top_k"]) == (0.6, 0.95, 20)
        assert (used["min_p"], used["max_tokens"]) == (0.0, 2)
        engine.generate(HI, max_tokens=2, temperature=0.0, top_k=5)
        used = sampling_of_last_row(audit)
        assert (used["temperature"], used["top_p"], used["top_k"]) == (0.0, 0.95, 5)


def test_without_a_generation_config_mlxnb_defaults_apply(engine: Engine) -> None:
    engine.generate(HI, max_tokens=2, seed=7)
    used = sampling_of_last_row(engine.audit)  # type: ignore[arg-type]
    assert (used["temperature"], used["top_p"], used["top_k"], used["seed"]) == (0.0, 1.0, 0, 7)


def test_a_thinking_model_gets_room_to_think(engine: Engine) -> None:
    assert engine.supports_thinking
    engine.generate(HI, logits_processors=[forced_output(engine.tokenizer, "ok")])
    assert sampling_of_last_row(engine.audit)["max_tokens"] == 4096  # type: ignore[arg-type]


def test_the_engine_max_tokens_option_still_wins(tiny_model_dir: Path, audit: AuditLog) -> None:
    with Engine(tiny_model_dir, audit=audit, max_tokens=3) as engine:
        assert engine.generate(HI).usage.completion_tokens == 3
        assert sampling_of_last_row(audit)["max_tokens"] == 3


def test_a_refused_request_records_no_settings(engine: Engine) -> None:
    with pytest.raises(ValueError, match="temperature"):
        engine.generate(HI, temperature=-1)
    assert engine.audit.df["sampling"].iloc[-1] is pd.NA  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"temperature": 0.7, "top_k": 40, "repetition_penalty": 1.1}, None),
        ({"do_sample": False, "temperature": 0.7}, {}),
        ({"temperature": "hot", "top_k": 2.5, "top_p": True, "min_p": 0.05}, {"min_p": 0.05}),
        ({"repetition_penalty": 1.0, "eos_token_id": 2}, {}),
        (None, {}),
    ],
)
def test_generation_defaults_take_only_sampling_numbers(
    config: dict[str, Any] | None, expected: dict[str, Any] | None
) -> None:
    assert generation_defaults(config) == (config if expected is None else expected)
