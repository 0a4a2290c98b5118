"""The CUDA attention choice: engines ask for MLX's own kernels unless the user chose."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlxnb
from mlxnb._engine.attention import CUDNN_ATTENTION, prefer_attention_without_plans


@pytest.mark.parametrize(("before", "after", "set_here"), [(None, "0", True), ("1", "1", False)])
def test_the_user_s_own_choice_stands(before: str | None, after: str, set_here: bool) -> None:
    environ = {} if before is None else {CUDNN_ATTENTION: before}

    assert prefer_attention_without_plans(environ) is set_here
    assert environ == {CUDNN_ATTENTION: after}


@pytest.mark.parametrize(("before", "after"), [(None, "0"), ("1", "1")])
def test_an_engine_chooses_before_it_loads_its_model(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, before: str | None, after: str
) -> None:
    # Set first either way, so the test's end restores the variable whatever the engine wrote.
    monkeypatch.setenv(CUDNN_ATTENTION, before or "unset below")
    if before is None:
        monkeypatch.delenv(CUDNN_ATTENTION)
    seen: list[str | None] = []
    real = mlxnb.Engine._load_backend

    def load_backend(self: mlxnb.Engine) -> object:
        import os

        seen.append(os.environ.get(CUDNN_ATTENTION))
        return real(self)

    monkeypatch.setattr(mlxnb.Engine, "_load_backend", load_backend)
    engine = mlxnb.Engine(tiny_model_dir, audit=False)
    try:
        assert (
            engine.generate([{"role": "user", "content": "Hi"}], max_tokens=2).finish_reason
            == "length"
        )
    finally:
        engine.close()

    assert seen == [after]
