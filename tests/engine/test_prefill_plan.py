"""How many prompts a prefill pass takes, and how many tokens of each, per device."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlxnb
from mlxnb._engine.worker_config import WorkerConfig, prefill_plan


@pytest.mark.parametrize(
    ("config", "on_gpu", "plan"),
    [
        (WorkerConfig(), False, (8, 2048)),  # the CPU: groups of 8, whole chunks
        (WorkerConfig(), True, (32, 512)),  # a GPU: a burst in one pass, as many tokens
        (WorkerConfig(max_batch=64), True, (64, 256)),
        (WorkerConfig(max_batch=4), True, (8, 2048)),
        (WorkerConfig(prefill_batch=16), True, (16, 2048)),  # asked for: as asked
        (WorkerConfig(prefill_batch=2, prefill_step=32), False, (2, 32)),
    ],
)
def test_prefill_plan(config: WorkerConfig, on_gpu: bool, plan: tuple[int, int]) -> None:
    assert prefill_plan(config, on_gpu) == plan


def test_the_option_reaches_the_batch_decoder(tiny_model_dir: Path) -> None:
    with mlxnb.load(tiny_model_dir, audit=False, prefill_batch=3, name="plan") as engine:
        turn = engine.generate([{"role": "user", "content": "Hi"}], max_tokens=2)
        assert turn.usage.completion_tokens == 2
        generator = engine._worker._generator
        assert generator.prefill_batch_size == 3
