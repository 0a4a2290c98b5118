"""Memory on the worker: the device's size, MLX's limits, the KV footprint, the prompt cache.

Everything here that touches MLX runs on the engine's worker thread (MLX state belongs to the
thread that made it): the worker sizes its budgets once, after loading (:func:`plan_memory`),
and answers :meth:`mlxnb.Engine.memory` with a :class:`MemoryStats` it reads itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlxnb.errors import InvalidRequestError

PROMPT_CACHE_SHARE = 1 / 8
"""Default prompt-cache cap, as a share of the device's memory."""
KV_SHARE = 3 / 4
"""Default KV budget: this share of the device's memory, less the weights and the prompt cache."""
KV_FLOOR_SHARE = 1 / 16
"""The default KV budget never goes below this share of the device's memory."""

KvBudget = int | Literal["auto"] | None


@dataclass(frozen=True)
class MemoryStats:
    """What an engine's model holds in memory now, read on its worker thread.

    Attributes:
        active_bytes: Memory MLX holds in live arrays (weights, KV caches, activations).
        cache_bytes: Memory MLX keeps in its buffer cache for reuse (freed arrays).
        peak_bytes: The most ``active_bytes`` has been since the process started.
        weights_bytes: The model's parameters (measured once, at load).
        prompt_cache_bytes: The prompt cache's KV entries (capped by ``prompt_cache_bytes``).
        prompt_cache_entries: Entries in the prompt cache.
        prompt_cache_system_bytes: Of ``prompt_cache_bytes``, the system prompts' entries.
        prompt_cache_limit_bytes: The prompt cache's cap.
        kv_bytes_per_token: KV-cache bytes one token of a sequence adds (``None``: unknown).
        kv_budget_bytes: The KV budget requests are admitted against (``None``: no budget).
        waiting: Requests waiting for KV memory.
    """

    active_bytes: int
    cache_bytes: int
    peak_bytes: int
    weights_bytes: int
    prompt_cache_bytes: int
    prompt_cache_entries: int
    prompt_cache_system_bytes: int
    prompt_cache_limit_bytes: int
    kv_bytes_per_token: int | None
    kv_budget_bytes: int | None
    waiting: int


@dataclass(frozen=True)
class KvFootprint:
    """What a sequence's KV cache costs, measured from the loaded model.

    Attributes:
        per_token: Bytes each token of a sequence adds (attention layers).
        per_sequence: Bytes a sequence holds whatever its length (recurrent layers' state).
    """

    per_token: int
    per_sequence: int = 0
    quantized_per_token: int | None = None
    quantized_start: int = 0

    def sequence_bytes(self, length: int) -> int:
        """The most KV memory one sequence of ``length`` tokens holds on its way there.

        With ``kv_bits`` a cache is quantised once it holds ``quantized_start`` tokens; while it
        is converted both copies exist, so both are counted past that point.
        """
        full = min(length, self.quantized_start) if self.quantized_per_token else length
        quantized = length * self.quantized_per_token if self.quantized_per_token else 0
        if length <= full:
            quantized = 0
        return full * self.per_token + quantized + self.per_sequence

    def batch_bytes(self, lengths: Sequence[int]) -> int:
        """The KV memory of sequences of these lengths decoded together.

        mlx-lm's batch caches pad every row to the longest one, so a batch costs its size times
        its longest sequence, not the sum of their lengths.
        """
        if not lengths:
            return 0
        return len(lengths) * self.sequence_bytes(max(lengths))


@dataclass(frozen=True)
class MemorySettings:
    """The engine's memory options, as given (see :class:`mlxnb.Engine`)."""

    prompt_cache_bytes: int | None = None
    memory_limit: int | None = None
    cache_limit: int | None = None
    kv_budget_bytes: KvBudget = "auto"


@dataclass(frozen=True)
class MemoryPlan:
    """The budgets the worker runs with, sized once after loading.

    Attributes:
        device_bytes: The device's memory (Metal's recommended working set, else the RAM).
        weights_bytes: The model's parameters.
        prompt_cache_bytes: The prompt cache's cap.
        kv: The model's KV footprint (``None`` when it could not be measured).
        kv_budget_bytes: The KV budget (``None``: admission by KV memory is off).
    """

    device_bytes: int
    weights_bytes: int
    prompt_cache_bytes: int
    kv: KvFootprint | None
    kv_budget_bytes: int | None


def physical_memory() -> int:
    """The machine's RAM in bytes (no MLX: safe on any thread)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        import psutil

        return int(psutil.virtual_memory().total)


def device_memory(mx: Any) -> int:
    """The memory a model may use: Metal's recommended working set, else the RAM (worker only)."""
    try:
        info = mx.device_info()
    except Exception:  # an MLX without device_info, or no device to ask
        info = {}
    for key in ("max_recommended_working_set_size", "memory_size"):
        value = info.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return physical_memory()


def weights_bytes(model: Any) -> int:
    """The bytes of a model's parameters."""
    from mlx.utils import tree_flatten

    return sum(int(value.nbytes) for _, value in tree_flatten(model.parameters()))


def measure_kv(model: Any, quantization: Any = None) -> KvFootprint | None:
    """Measure a model's KV footprint from a real cache after one token (worker only).

    One forward pass of one token through a fresh ``make_prompt_cache`` cache covers every
    cache kind mlx-lm makes: attention caches grow per token (their per-token cost is their
    bytes over their allocated length), others hold fixed state per sequence. Sliding-window
    caches are counted as growing without bound, which over-estimates and so errs safe.

    With ``quantization`` (a :class:`~mlxnb._engine.kv_quantization.KvQuantization`), the
    quantised cache's cost per token is measured from the same cache converted.

    Returns:
        The footprint, or ``None`` when the model cannot be measured this way.
    """
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    try:
        cache = make_prompt_cache(model)
        model(mx.array([[0]], dtype=mx.uint32), cache=cache)
        mx.eval([layer.state for layer in cache])
    except Exception:  # a model that needs more than tokens and a cache (some vision models)
        return None
    per_token, per_sequence = _per_token(mx, cache)
    if per_token <= 0 and per_sequence <= 0:
        return None
    quantized: int | None = None
    if quantization is not None:
        try:
            converted = [
                layer.to_quantized(group_size=quantization.group_size, bits=quantization.bits)
                if hasattr(layer, "to_quantized")
                else layer
                for layer in cache
            ]
            mx.eval([layer.state for layer in converted])
        except ValueError as error:  # the head dimension is not a multiple of the group
            raise InvalidRequestError(
                f"kv_group_size={quantization.group_size} cannot quantise this model's KV cache "
                f"(the KV head dimension must be a multiple of it): {error}"
            ) from error
        quantized = max(1, round(_per_token(mx, converted)[0]))
    footprint = KvFootprint(max(1, round(per_token)), per_sequence)
    if quantized is None:
        return footprint
    return KvFootprint(footprint.per_token, per_sequence, quantized, quantization.start)


def _per_token(mx: Any, cache: Sequence[Any]) -> tuple[float, int]:
    """A cache's bytes per token (growing layers) and per sequence (fixed-state layers)."""
    per_token = 0.0
    per_sequence = 0
    for layer in cache:
        keys = getattr(layer, "keys", None)
        first = keys[0] if isinstance(keys, (tuple, list)) and keys else keys
        length = first.shape[2] if isinstance(first, mx.array) and first.ndim == 4 else 0
        if length > 0:
            per_token += layer.nbytes / length
        else:
            per_sequence += int(layer.nbytes)
    return per_token, per_sequence


def settle_prefill(mx: Any, cache: Sequence[Any]) -> None:
    """Compute a prefill chunk into ``cache``, then free MLX's cached buffers (worker only).

    A chunk's temporaries grow with the context (attention scores over all of it, where the
    backend does not fuse attention, as MLX's CUDA kernels do not), so the next chunk cannot
    reuse them and MLX's buffer cache would keep every one: two engines prefilling 30 000-token
    prompts ran an H200's 139 GB out this way. mlx-lm's own prefill loops free them too.
    """
    mx.eval([layer.state for layer in cache])
    mx.clear_cache()


CLEAR_EVERY = 256
"""Decode steps between two frees of MLX's buffer cache (mlx-lm's single-sequence loop's)."""


def apply_limits(mx: Any, settings: MemorySettings) -> None:
    """Set MLX's memory and buffer-cache limits, where the settings give them (worker only)."""
    if settings.memory_limit is not None:
        mx.set_memory_limit(settings.memory_limit)
    if settings.cache_limit is not None:
        mx.set_cache_limit(settings.cache_limit)


def plan_memory(
    mx: Any,
    model: Any,
    kv_model: Any | None,
    settings: MemorySettings,
    quantization: Any = None,
) -> MemoryPlan:
    """Size the prompt cache and the KV budget for a loaded model (worker only).

    Args:
        mx: ``mlx.core``.
        model: The whole model (its weights are counted).
        kv_model: The language model whose KV cache requests fill (``None``: not measured).
        settings: The engine's options.
        quantization: The engine's ``kv_bits`` setting, if any (its footprint is measured).

    The defaults: the prompt cache gets :data:`PROMPT_CACHE_SHARE` of the device's memory;
    the KV budget is :data:`KV_SHARE` of it less the weights and the prompt cache's cap, but
    never below :data:`KV_FLOOR_SHARE` of it.
    """
    device = device_memory(mx)
    weights = weights_bytes(model)
    cap = settings.prompt_cache_bytes
    prompt_cache = int(device * PROMPT_CACHE_SHARE) if cap is None else max(0, cap)
    kv = measure_kv(kv_model, quantization) if kv_model is not None else None
    budget = settings.kv_budget_bytes
    if budget == "auto":
        budget = max(int(device * KV_SHARE) - weights - prompt_cache, int(device * KV_FLOOR_SHARE))
    elif not budget:  # None or 0: off
        budget = None
    return MemoryPlan(device, weights, prompt_cache, kv, budget if kv is not None else None)
