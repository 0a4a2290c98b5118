"""Choosing the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxnb._engine.models import DEFAULT_REPO, _hub_reachable, default_model


def test_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXNB_MODEL", "/models/mine")
    assert default_model() == "/models/mine"


def test_offline_hub_is_not_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _hub_reachable() is False


@pytest.mark.slow
def test_offline_default_is_the_converted_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLXNB_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    chosen = default_model()
    assert chosen != DEFAULT_REPO
    assert (Path(chosen) / "config.json").exists()
    assert "smollm2" in chosen.lower()
