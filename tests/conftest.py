"""Shared fixtures: an isolated environment, the offline tiny model and a real engine on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mlxnb
from mlxnb.testing import ForcedOutput, forced_output, tiny_model


@pytest.fixture(scope="session", autouse=True)
def _offline_isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No hub, and audit rows go to a temporary store unless a test says otherwise."""
    saved = dict(os.environ)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MLXNB_AUDIT"] = str(tmp_path_factory.mktemp("audit") / "audit.sqlite3")
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Qwen3-shaped model with the real Qwen3 tokenizer (built once, cached)."""
    return tiny_model()


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    """A real engine on the tiny model, shared by the session."""
    with mlxnb.load(tiny_model_dir) as shared:
        yield shared


@pytest.fixture
def force(engine: mlxnb.Engine) -> Callable[..., ForcedOutput]:
    """Make forced-output processors for the shared engine: ``force("text")``."""

    def make(text: str, then: str = "eos") -> ForcedOutput:
        return forced_output(engine.tokenizer, text, then=then)

    return make
