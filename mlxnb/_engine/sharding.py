"""One text model split over the processes of an MLX distributed group (mlx-lm's sharded load).

Tensor parallelism splits every layer's attention heads and MLP over the ranks, so each step
needs all of them at once but each holds a fraction of every layer; it needs the head counts to
divide by the group's size. Pipeline parallelism gives each rank a run of whole layers and
works for any count. The plan picks tensor parallelism where the heads divide, as the faster
one, and pipeline parallelism otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from mlxnb._engine.backend import load_error, read_config, resolve_model
from mlxnb.errors import ModelLoadError

Plan = Literal["tensor", "pipeline"]


def sharding_plans(config: dict[str, Any], size: int) -> list[Plan]:
    """The ways to split a model of ``config`` over ``size`` ranks, the preferred first."""
    heads = config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads", heads)
    counts = (heads, kv_heads)
    if all(isinstance(n, int) and n % size == 0 for n in counts):
        return ["tensor", "pipeline"]
    return ["pipeline"]


def load_sharded_text_model(ref: str | Path, group: Any) -> tuple[Any, Any, str]:
    """Load this rank's shard of ``ref`` (a collective: every rank of ``group`` calls it).

    Returns:
        ``(model, tokenizer, model_id)``.

    Raises:
        ModelNotFoundError: Nothing at the path, and not a repo id that can be found.
        ModelLoadError: The model cannot be loaded, or split either way over the group.
    """
    from mlx_lm.utils import sharded_load

    text, target = str(ref), resolve_model(ref)
    size = int(group.size())
    refusals = []
    for plan in sharding_plans(read_config(target) or {}, size):
        groups = {f"{plan}_group": group}
        try:
            model, tokenizer = sharded_load(target, **groups)
        except ValueError as error:  # mlx-lm: the model class cannot be split this way
            refusals.append(f"{plan} parallel: {error}")
            continue
        except Exception as error:
            raise load_error(text, target, error) from error
        return model, tokenizer, text
    raise ModelLoadError(f"could not split {text!r} over {size} processes ({'; '.join(refusals)})")
