"""Which attention kernels MLX's CUDA backend runs for prompts.

MLX's CUDA backend computes a prompt's attention with cuDNN by default, and cuDNN plans its work
for each new combination of batch size, prompt length and cached length: 60 to 90 ms of host time
on an H200 before the first such call runs (``bench/bench_shapes.py``; the same prefill again
takes 10 ms). Real prompts rarely repeat a length, so nearly every turn paid it. MLX's own
kernels need no plan and are as fast for prompts up to about a thousand tokens; cuDNN is faster
on long prompts once its plan exists (2048 tokens: 12 vs 23 ms; 4096: 21 vs 60 ms) and needs
less memory for them (8 192 tokens: 2.7x faster to the first token, a quarter of the peak
memory; ``bench/bench_env.py``), so long-document users set the variable to 1 themselves.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: The environment variable MLX's CUDA backend reads, once per process (into a static, at its
#: first attention call): one process cannot choose per call.
CUDNN_ATTENTION = "MLX_CUDA_USE_CUDNN_SDPA"


def prefer_attention_without_plans(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Have MLX's CUDA backend use its own attention kernels, unless the user already chose.

    Harmless elsewhere: only the CUDA backend reads the variable. It must be set before the
    process's first attention call on the GPU, so engines set it before loading a model.

    Args:
        environ: The environment to set it in.

    Returns:
        Whether this call set it (``False`` when the variable was already set, to any value).
    """
    if CUDNN_ATTENTION in environ:
        return False
    environ[CUDNN_ATTENTION] = "0"
    return True
