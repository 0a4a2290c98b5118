"""Fixtures for the chat widget's Python tests: scripted (forced) output for the shared real
engine (``engine`` in tests/conftest.py). The comm tap lives in widget_fakes.py; the fake engine
is :class:`mlxnb.testing.FakeEngine`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from widget_fakes import Script

import mlxnb
from mlxnb.testing import forced_output


@pytest.fixture
def script(engine: mlxnb.Engine) -> Script:
    """``script(text, ...)`` → a generation-options factory forcing one text per request."""

    def make(*texts: str, max_tokens: int = 400) -> Callable[[], Mapping[str, Any]]:
        pending = list(texts)

        def options() -> Mapping[str, Any]:
            assert pending, "the model was asked for more replies than the test scripted"
            proc = forced_output(engine.tokenizer, pending.pop(0))
            return {"logits_processors": [proc], "max_tokens": max_tokens}

        return options

    return make
