"""A conversation resumed in a new kernel, in a real JupyterLab through headless Chromium, on the
real engine (fixture model, forced output); the scenario is in resume.py (Notebook 7 runs it
too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from labpage import LabPage
from resume import resume_through

pytestmark = pytest.mark.browser


def test_a_conversation_resumed_in_a_new_kernel(lab_page: LabPage, tmp_path: Path) -> None:
    assert resume_through(lab_page, tmp_path) == []
