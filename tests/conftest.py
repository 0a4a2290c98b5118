"""Shared fixtures: an isolated environment, the offline tiny model and a real engine on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mlxnb
from mlxnb.testing import ForcedOutput, forced_output, tiny_model


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each test file on one parallel worker, and every browser test on the same one.

    A file's module-scoped fixtures (engines, servers) are then built once, and only one worker
    starts JupyterLab and Chromium. Runs with ``--dist loadgroup`` (as ``make test`` does).
    """
    tests = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            relative = item.path.relative_to(tests)
            group = "browser" if relative.parts[0] == "browser" else relative.as_posix()
            item.add_marker(pytest.mark.xdist_group(group))


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
