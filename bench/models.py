"""Random-weight models of real shapes for benchmarks (speed does not depend on weight values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlxnb.testing import tiny_model, tiny_vision_model

SHAPES: dict[str, dict[str, Any]] = {
    # Fast enough for a smoke run.
    "tiny": {},
    # tiny with the local 495-token BPE instead of Qwen3's 151 k vocabulary: no large
    # projection, so a step is mostly launching ops and per-token overhead dominates, as for
    # a small model on a fast GPU.
    "nano": {"tokenizer": "bpe"},
    # ~100 M parameters (fp32 ~0.4 GB): memory-bound on this CPU, runs in minutes.
    "mid": {
        "hidden_size": 512,
        "num_layers": 8,
        "num_heads": 8,
        "num_kv_heads": 4,
        "intermediate_size": 1536,
        "head_dim": 64,
    },
    # Qwen3-0.6B's shape (fp32 2.4 GB): the real thing, slow on a 2-core CPU.
    "qwen3-0.6b": {
        "hidden_size": 1024,
        "num_layers": 28,
        "num_heads": 16,
        "num_kv_heads": 8,
        "intermediate_size": 3072,
        "head_dim": 128,
    },
}


def bench_model(shape: str, dtype: str = "float32", bits: int | None = None) -> Path:
    """Build (once, cached) the random-weight model of ``shape``, quantized to ``bits`` if set.

    Quantized models (what people run on a Mac) are converted by ``mlx_lm.convert`` next to
    the full-precision one, with its default group size.
    """
    path = tiny_model(**SHAPES[shape], dtype=dtype)
    if bits is None:
        return path
    quantized = path.with_name(f"{path.name}-q{bits}")
    if not (quantized / "config.json").exists():
        from mlx_lm import convert

        convert(str(path), str(quantized), quantize=True, q_bits=bits)
    return quantized


VISION_SHAPES: dict[str, dict[str, Any]] = {
    # The test fixture (64-wide, 2 layers, 16 image tokens): a smoke run.
    "tiny": {},
    # The text "mid" shape (~100 M parameters, most in the 151 k-row tied embedding) behind a
    # small Qwen3-VL vision tower; a 256 x 256 image is 64 image tokens.
    "mid": {
        "hidden_size": 512,
        "num_layers": 8,
        "num_heads": 8,
        "num_kv_heads": 4,
        "intermediate_size": 1536,
        "vision_depth": 4,
        "vision_hidden_size": 256,
        "vision_num_heads": 4,
        "max_image_tokens": 64,
    },
}


def bench_vision_model(shape: str, dtype: str = "float32", arch: str = "qwen3_vl") -> Path:
    """Build (once, cached) the random-weight Qwen-VL model of ``shape`` (Qwen3-VL unless
    ``arch`` says otherwise)."""
    return tiny_vision_model(**VISION_SHAPES[shape], dtype=dtype, arch=arch)
