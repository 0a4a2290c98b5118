"""A model directory's tokenizer, loaded once per process while its files stay the same.

Loading one with transformers parses ``tokenizer.json`` and builds vocabulary maps: about 1.6 s
of CPU for Qwen3's 151 k tokens on the 2-core VM, paid again by every engine on the same model
(the pool's twin with other options, a model loaded again after it was unloaded, a draft model
sharing the vocabulary). mlx-lm's ``TokenizerWrapper`` can be shared: each caller gets its own
copy of the streaming detokenizer, and the engines never change the wrapper.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

KEPT = 8
"""Tokenizers kept (least recently used go first)."""

_Key = tuple[str, str, tuple[tuple[str, int, int], ...]]

_kept: OrderedDict[_Key, Any] = OrderedDict()
_lock = threading.Lock()


def load_local_model(directory: Path) -> tuple[Any, Any]:
    """``mlx_lm.load`` for a local directory, reusing a tokenizer loaded from the same files.

    Args:
        directory: A model directory (``config.json``, weights, tokenizer files).

    Returns:
        ``(model, tokenizer)`` as ``mlx_lm.load`` returns them.
    """
    from mlx_lm.utils import load_model, load_tokenizer

    model, config = load_model(directory)
    eos_token_ids = config.get("eos_token_id")
    key = _key(directory, eos_token_ids)
    with _lock:
        tokenizer = _kept.get(key)
        if tokenizer is not None:
            _kept.move_to_end(key)
            return model, tokenizer
    tokenizer = load_tokenizer(directory, eos_token_ids=eos_token_ids)
    with _lock:
        _kept[key] = tokenizer
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    return model, tokenizer


def _key(directory: Path, eos_token_ids: Any) -> _Key:
    """The directory and every file but the weights, by size and modification time."""
    files = tuple(
        sorted(
            (path.name, stat.st_size, stat.st_mtime_ns)
            for path in directory.iterdir()
            if path.is_file() and path.suffix != ".safetensors"
            for stat in (path.stat(),)
        )
    )
    return str(directory.resolve()), repr(eos_token_ids), files
