"""A LoRA adapters folder for a tiny model, as ``mlx_lm.lora`` writes one after training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlxnb._engine.backend import ADAPTER_FILES
from mlxnb.testing._tiny import built_model_dir, tiny_model

ADAPTER_CONFIG, ADAPTER_WEIGHTS = ADAPTER_FILES


def tiny_adapter(
    model: str | Path | None = None,
    path: str | Path | None = None,
    *,
    rank: int = 4,
    scale: float = 20.0,
    num_layers: int = 2,
    seed: int = 0,
    dora: bool = False,
) -> Path:
    """Write LoRA adapters for ``model`` that ``mlx_lm.load(model, adapter_path=...)`` accepts.

    The folder holds what ``mlx_lm.lora`` leaves after training (``adapter_config.json`` and
    ``adapters.safetensors``), built with mlx-lm's own LoRA layers. Trained adapters are
    stood in for by random ones: an untrained adapter's second matrix is zero and would change
    nothing, so here both matrices are random and the adapted model answers differently.

    Args:
        model: The model directory the adapters fit (default: :func:`tiny_model`'s).
        path: Target directory. ``None`` uses a cache directory keyed by the arguments.
        rank: The LoRA rank.
        scale: The LoRA scale (mlx-lm's name for alpha over rank).
        num_layers: How many of the last transformer blocks get adapters.
        seed: Seed for the random adapter weights.
        dora: Write DoRA adapters (``fine_tune_type: dora``: a magnitude per output besides
            the two matrices) instead of LoRA ones.

    Returns:
        The adapters folder.

    Example:
        >>> import mlxnb
        >>> from mlxnb.testing import tiny_adapter, tiny_model
        >>> tuned = mlxnb.load(tiny_model(), adapter_path=tiny_adapter())  # doctest: +SKIP
    """
    base = Path(model) if model is not None else tiny_model()
    weights = base / "model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.exists() else 0
    parameters = {"rank": rank, "scale": scale, "dropout": 0.0}
    kind = "dora" if dora else "lora"
    shape = {"model": str(base.resolve()), "stamp": stamp, "layers": num_layers, "seed": seed}
    if dora:
        shape["kind"] = kind

    def write(staging: Path) -> None:
        import mlx.core as mx
        from mlx.utils import tree_flatten
        from mlx_lm.tuner.utils import linear_to_lora_layers
        from mlx_lm.utils import load_model

        loaded: Any = load_model(base)[0]
        loaded.freeze()
        linear_to_lora_layers(loaded, num_layers, parameters, use_dora=dora)
        key = mx.random.key(seed)
        adapters = {}
        for name, value in tree_flatten(loaded.trainable_parameters()):
            key, draw = mx.random.split(key)
            if name.endswith(".m"):  # DoRA's magnitudes: near the weights' own norms
                noise = 1 + 0.1 * mx.random.normal(value.shape, key=draw)
                adapters[name] = (value * noise).astype(value.dtype)
                continue
            spread = 0.05 if name.endswith("lora_b") else 1 / value.shape[0] ** 0.5
            adapters[name] = (spread * mx.random.normal(value.shape, key=draw)).astype(value.dtype)
        mx.save_safetensors(str(staging / ADAPTER_WEIGHTS), adapters)
        config = {"fine_tune_type": kind, "num_layers": num_layers, "lora_parameters": parameters}
        (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))

    return built_model_dir(
        path,
        {**shape, **parameters},
        "tiny-adapter",
        write,
        complete=lambda folder: (
            (folder / ADAPTER_WEIGHTS).exists() and (folder / ADAPTER_CONFIG).exists()
        ),
    )
