"""Steering a turn in a real JupyterLab through headless Chromium, on the real engine (fixture
model, forced output): Run / Deny, Stop during a slow plain ``def`` tool, Continue, edit and
resend (the scenario is in steering.py; Notebook 7 runs it too). Screenshots go to
test-artifacts/widget/."""

from __future__ import annotations

import pytest
from labpage import LabPage
from steering import open_steering_chat, steer_through

pytestmark = pytest.mark.browser


def test_run_deny_stop_continue_and_edit(lab_page: LabPage) -> None:
    chat = open_steering_chat(lab_page)
    stop_seconds = steer_through(chat)
    print(f"Stop during a slow tool: {stop_seconds:.3f} s from click to the cancelled turn")
    assert lab_page.errors == []
