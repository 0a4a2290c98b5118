"""evaluate() over several models through a pool: one model resident at a time, same frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mlxnb
from mlxnb._engine import engine as engine_module
from mlxnb._engine.catalog import estimate_bytes
from mlxnb.testing import tiny_model

PROMPTS = ["one", "two", "three"]
COLUMNS = ["prompt", "model", "content", "finish_reason", "completion_tokens"]


@pytest.fixture(scope="module")
def paths() -> list[Path]:
    return [tiny_model(seed=seed) for seed in (0, 1, 2)]


def test_three_models_under_a_one_model_budget_run_one_at_a_time(
    paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = int(max(estimate_bytes(path) for path in paths) * 1.5)
    pool = mlxnb.ModelPool(budget_bytes=budget, engine_options={"audit": False})
    resident_at_load: list[int] = []
    real = engine_module.load_text_model

    def counting(ref: Any, adapter_path: Any = None) -> Any:
        frame = pool.models()
        resident_at_load.append(int((frame["state"] == "ready").sum()))
        return real(ref, adapter_path)

    monkeypatch.setattr(engine_module, "load_text_model", counting)
    options: dict[str, Any] = {"max_tokens": 3, "temperature": 0.0, "progress": False}
    try:
        together = mlxnb.evaluate(PROMPTS, model=paths, pool=pool, **options)
        assert resident_at_load == [0, 0, 0]  # each load found no other model resident
        assert pool.unloads == 3  # evaluate released each model after its rows
        one_by_one = pd.concat(
            [mlxnb.evaluate(PROMPTS, model=path, pool=pool, **options) for path in paths],
            ignore_index=True,
        )
    finally:
        pool.close()
    assert list(together["model"].unique()) == [path.name for path in paths]
    pd.testing.assert_frame_equal(together[COLUMNS], one_by_one[COLUMNS])


def test_a_profile_is_a_model_for_evaluate(paths: list[Path]) -> None:
    pool = mlxnb.ModelPool(engine_options={"audit": False, "max_tokens": 4})
    try:
        name = pool.register(paths[0])
        pool.add_profile(mlxnb.Profile("short", name, sampling={"max_tokens": 2}))
        frame = mlxnb.evaluate(
            PROMPTS, model=["short", name], pool=pool, progress=False, max_tokens=None
        )
        assert list(frame["model"]) == ["short"] * 3 + [name] * 3
        assert (frame.loc[frame["model"] == "short", "completion_tokens"] <= 2).all()
        assert pool.state(name)["state"] == "unloaded"  # loaded by the evaluation, released
    finally:
        pool.close()


def test_a_model_already_loaded_stays_loaded(paths: list[Path]) -> None:
    pool = mlxnb.ModelPool(engine_options={"audit": False, "max_tokens": 4})
    try:
        engine = pool.load(paths[1])
        mlxnb.evaluate(PROMPTS[:1], model=engine.model_id, pool=pool, progress=False, max_tokens=2)
        assert not engine.closed
    finally:
        pool.close()
