"""Prefill progress events: only when asked, before the first token, counting up to the prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mlxnb
from mlxnb.events import PrefillProgress

LONG = [{"role": "user", "content": "Tell me about lighthouses. " * 40}]


@pytest.fixture(scope="module", params=[True, False], ids=["single-sequence", "batch"])
def small_steps(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[mlxnb.Engine]:
    """An engine that processes prompts 32 tokens per forward pass, on either decoding path."""
    with mlxnb.Engine(
        tiny_model_dir, audit=False, prefill_step=32, max_tokens=3, solo_fast_path=request.param
    ) as engine:
        yield engine


async def test_progress_comes_before_the_first_token_and_counts_up(
    small_steps: mlxnb.Engine,
) -> None:
    events = [e async for e in small_steps.stream(LONG, prefill_progress=True)]
    progress = [e for e in events if isinstance(e, PrefillProgress)]
    first_other = next(i for i, e in enumerate(events) if not isinstance(e, PrefillProgress))
    assert len(progress) >= 5 and all(isinstance(e, PrefillProgress) for e in events[:first_other])
    done = events[-1]
    assert isinstance(done, mlxnb.Done)
    assert done.usage.cached_tokens == 0  # a prompt this engine has not seen
    assert {e.total for e in progress} == {done.usage.prompt_tokens}
    processed = [e.processed for e in progress]
    assert processed == sorted(processed) and processed[0] == 32
    assert processed[-1] >= done.usage.prompt_tokens - 32


async def test_no_progress_unless_asked(small_steps: mlxnb.Engine) -> None:
    messages = [{"role": "user", "content": "Something else entirely. " * 40}]
    events = [e async for e in small_steps.stream(messages)]
    assert not any(isinstance(e, PrefillProgress) for e in events)


def test_blocking_callers_can_ask_too(small_steps: mlxnb.Engine) -> None:
    messages = [{"role": "user", "content": "A different prompt about boats. " * 40}]
    events = list(small_steps.stream_sync(messages, prefill_progress=True))
    assert any(isinstance(e, PrefillProgress) for e in events)
    assert mlxnb.events.collect(events).finish_reason in ("length", "stop")
