"""The worker's settings (`WorkerConfig`), how it prefills on each device, and its audit hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mlxnb._engine.disk_cache import DiskPromptCache
from mlxnb._engine.kv_quantization import KvQuantization
from mlxnb._engine.memory import MemorySettings
from mlxnb._engine.request import Request
from mlxnb.events import TurnBuilder

Finished = Callable[[Request, TurnBuilder, float, BaseException | None], None]
"""Called on the worker thread once per request when it ends: events, duration, error."""


@dataclass(frozen=True)
class WorkerConfig:
    """Tuning of the worker.

    Attributes:
        max_batch: Most sequences decoded together.
        prefill_batch: Most prompts processed together. ``None``: ``max_batch`` on GPUs (a
            burst of 32 requests prefilled in one pass reached its first tokens sooner than in
            groups of 8, at the median and the 90th percentile, on an H200), 8 on the CPU, where
            a prefill is compute-bound and the first group's first tokens come sooner.
        prefill_step: Prompt tokens per forward pass while prefilling (cancel checks between).
            ``None``: :data:`CPU_PREFILL_STEP` on the CPU, :data:`GPU_PREFILL_STEP` on GPUs.
        prompt_cache_size: Conversations whose KV cache is kept for reuse.
        solo_fast_path: Decode a request that runs alone with a single-sequence step
            (:mod:`mlxnb._engine.solo`, :mod:`mlxnb._engine.vision_solo`), handing a text
            request to the batch when another request arrives. On by default: a batch of one
            decoded at 0.65 of raw on an H100 (0.99 on this path), and on the CPU it costs
            +341 k instructions per token on the launching thread against +25 k here
            (``bench_overhead --instructions``).
        memory: The prompt cache's byte cap, MLX's limits and the KV budget.
        admission_timeout: Seconds a request may wait for KV memory before it ends with
            ``EngineBusyError``.
        disk_cache: Where system-prompt caches are kept across kernels (``None``: nowhere).
        kv_quantization: Quantise text requests' KV caches (``kv_bits``): each decodes alone on
            the single-sequence path, one at a time (mlx-lm's batch cannot hold such caches).
    """

    max_batch: int = 32
    prefill_batch: int | None = None
    prefill_step: int | None = None
    prompt_cache_size: int = 16
    solo_fast_path: bool = True
    memory: MemorySettings = field(default_factory=MemorySettings)
    admission_timeout: float = 30.0
    disk_cache: DiskPromptCache | None = None
    kv_quantization: KvQuantization | None = None


CPU_PREFILL_BATCH = 8
GPU_PREFILL_STEP = 2048
"""Prompt tokens per pass on a GPU (mlx-lm's own default)."""
CPU_PREFILL_STEP = 256
"""Prompt tokens per pass on the CPU. MLX's CPU attention is not fused: a pass holds its scores
over the whole context (heads x chunk x context values), and smaller chunks keep them small
for the same total work. Measured with ``bench.prefill_chunks`` (``mid`` shape, fp32, the
2-core VM): a 4 096-token prompt's first token after 12.0 s in chunks of 2 048, 9.5 s in
chunks of 512 and 8.6 s in chunks of 256, its peak memory 0.84, 0.57 and 0.53 GB."""


def prefill_step_for(config: WorkerConfig, on_gpu: bool) -> int:
    """Prompt tokens per forward pass: as configured, else the device's default."""
    if config.prefill_step is not None:
        return config.prefill_step
    return GPU_PREFILL_STEP if on_gpu else CPU_PREFILL_STEP


def prefill_plan(config: WorkerConfig, on_gpu: bool) -> tuple[int, int]:
    """The batch's prompts per prefill pass and tokens per prompt per pass.

    Chosen for the device when ``config.prefill_batch`` is ``None``: on a GPU every prompt of a
    burst joins one pass, each in chunks small enough that a pass holds no more tokens than
    eight full chunks would (so long prompts cost no more activation memory than before).
    """
    step = prefill_step_for(config, on_gpu)
    if config.prefill_batch is not None:
        return config.prefill_batch, step
    if not on_gpu:
        return CPU_PREFILL_BATCH, step
    batch = max(config.max_batch, CPU_PREFILL_BATCH)
    return batch, max(step * CPU_PREFILL_BATCH // batch, 1)
