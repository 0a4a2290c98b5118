"""KV-cache quantisation (``kv_bits``): long contexts in a fraction of the memory.

mlx-lm quantises a sequence's KV cache in place once it holds ``start`` tokens
(``QuantizedKVCache``: ``bits`` per element plus a scale and a bias per ``group_size``
elements). Its batch decoder cannot hold such caches, so an engine with ``kv_bits`` decodes
every text request on the single-sequence path, one request at a time in arrival order, as
``mlx_lm.server --kv-bits`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxnb.errors import InvalidRequestError

BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_START = 5000  # mlx-lm's: short conversations keep full-precision KV


@dataclass(frozen=True)
class KvQuantization:
    """How a sequence's KV cache is quantised.

    Attributes:
        bits: Bits per element (2, 3, 4, 5, 6 or 8).
        group_size: Elements sharing one scale and bias (32, 64 or 128).
        start: Tokens a sequence holds before its cache is quantised (0: from the first).
    """

    bits: int
    group_size: int = 64
    start: int = DEFAULT_START

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise InvalidRequestError(f"kv_bits must be one of {list(BITS)}, not {self.bits!r}")
        if self.group_size not in GROUP_SIZES:
            raise InvalidRequestError(
                f"kv_group_size must be one of {list(GROUP_SIZES)}, not {self.group_size!r}"
            )
        if not isinstance(self.start, int) or self.start < 0:
            raise InvalidRequestError("quantized_kv_start must be a whole number >= 0")

    def apply(self, cache: list[Any]) -> None:
        """Quantise the layers of ``cache`` (in place) that hold ``start`` tokens or more."""
        from mlx_lm.generate import maybe_quantize_kv_cache

        maybe_quantize_kv_cache(cache, self.start, self.group_size, self.bits)


def kv_quantization(
    bits: int | None, group_size: int = 64, start: int = DEFAULT_START
) -> KvQuantization | None:
    """The engine's KV quantisation from its options (``bits=None``: off)."""
    return None if bits is None else KvQuantization(bits, group_size, start)
