"""How many prompts a prefill pass takes, and how many tokens of each, per device."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlxnb
from mlxnb._engine.worker_config import (
    CPU_PREFILL_STEP,
    GPU_PREFILL_STEP,
    WorkerConfig,
    prefill_plan,
    prefill_step_for,
)


@pytest.mark.parametrize(
    ("config", "on_gpu", "plan"),
    [
        (WorkerConfig(), False, (8, 256)),  # the CPU: groups of 8, its own short chunks
        (WorkerConfig(), True, (32, 512)),  # a GPU: a burst in one pass, as many tokens
        (WorkerConfig(max_batch=64), True, (64, 256)),
        (WorkerConfig(max_batch=4), True, (8, 2048)),
        (WorkerConfig(prefill_batch=16), True, (16, 2048)),  # asked for: as asked
        (WorkerConfig(prefill_batch=16), False, (16, 256)),
        (WorkerConfig(prefill_batch=2, prefill_step=32), False, (2, 32)),
        (WorkerConfig(prefill_step=4096), True, (32, 1024)),
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


@pytest.mark.parametrize(
    ("config", "on_gpu", "step"),
    [
        (WorkerConfig(), False, CPU_PREFILL_STEP),
        (WorkerConfig(), True, GPU_PREFILL_STEP),
        (WorkerConfig(prefill_step=64), False, 64),
        (WorkerConfig(prefill_step=64), True, 64),
    ],
)
def test_a_lone_request_prefills_in_the_device_s_chunks_unless_asked(
    config: WorkerConfig, on_gpu: bool, step: int
) -> None:
    assert prefill_step_for(config, on_gpu) == step


def test_the_cpu_s_chunks_reach_a_lone_request_and_scoring(tiny_model_dir: Path) -> None:
    with mlxnb.load(tiny_model_dir, audit=False, name="chunks") as engine:
        engine.generate([{"role": "user", "content": "Hi"}], max_tokens=1)
        assert engine._worker.prefill_step == CPU_PREFILL_STEP
        # A context of three chunks scores as one of a single pass would.
        context = " ".join(["word"] * (3 * CPU_PREFILL_STEP))
        chunked = engine.score(context, [" word", " other"])
    with mlxnb.load(tiny_model_dir, audit=False, name="one pass", prefill_step=8192) as engine:
        whole = engine.score(context, [" word", " other"])
    assert [s.logprob for s in chunked] == pytest.approx([s.logprob for s in whole], abs=1e-3)
