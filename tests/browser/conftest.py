"""Real JupyterLab + headless Chromium (Debian's) + Playwright, one server per session.

Without chromium these tests skip, unless CI is "true": then a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import JupyterLab, launch_chromium
from labpage import Chat, LabPage

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "widget"


@pytest.fixture(scope="session")
def chromium() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed and CI=true: run `apt-get install -y chromium`")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="session")
def lab(chromium: str) -> Iterator[JupyterLab]:
    server = JupyterLab()
    yield server
    server.stop()


# Module scope: Playwright's sync API keeps an event loop running in the main thread while it
# is open, which would break every asyncio test collected after this package.
@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    with launch_chromium(chromium) as instance:
        yield instance


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def lab_page(
    browser: Any, lab: JupyterLab, request: pytest.FixtureRequest, artifacts: Path
) -> Iterator[LabPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    helper = LabPage(page, lab, artifacts, request.node.name)
    try:
        yield helper
    finally:
        context.close()
        lab.shutdown_kernels()


@pytest.fixture
def open_chat(lab_page: LabPage) -> Callable[..., Chat]:
    """``open_chat(replies, tools=...)`` → a notebook whose widget will say ``replies`` in order."""
    return lab_page.open_chat
