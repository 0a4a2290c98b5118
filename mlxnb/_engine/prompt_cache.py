"""The in-memory prompt cache: KV caches of earlier prompts, for the requests that share them."""

from __future__ import annotations

import copy
import sys
from typing import Any

VALUE = "__value__"
"""The key under which mlx-lm's prompt trie keeps an entry at its node."""


class PromptCache:
    """mlx-lm's ``LRUPromptCache``, capped in entries and bytes, keeping system prompts longest.

    Entries are typed as mlx-lm's server types them: ``"system"`` for a system prompt's prefix,
    ``"assistant"`` for a finished turn. Eviction takes assistant entries before system ones.
    mlx-lm drops every stored prefix of an entry it inserts (the longer entry can be trimmed to
    serve it); here a system prefix survives that, so once its conversations are evicted, a
    new conversation with the same system prompt still starts from its cache.

    Args:
        max_size: Most entries.
        max_bytes: Most bytes of KV held by the entries together.
    """

    def __init__(self, max_size: int, max_bytes: int) -> None:
        from mlx_lm.models.cache import LRUPromptCache

        self._lru = LRUPromptCache(max_size=max_size, max_bytes=max_bytes)
        self.max_size = max_size
        self.max_bytes = max_bytes

    @property
    def nbytes(self) -> int:
        """Bytes of KV held by the entries."""
        return int(self._lru.nbytes)

    def __len__(self) -> int:
        return len(self._lru)

    def stats_by_type(self) -> dict[str, dict[str, int]]:
        """Entries and bytes per entry type (``assistant``, ``user``, ``system``)."""
        stats: dict[str, dict[str, int]] = self._lru.stats_by_type()
        return stats

    def fetch_nearest_cache(self, model: Any, tokens: list[int]) -> tuple[Any, list[int]]:
        """A cache holding the longest stored prefix of ``tokens``, and the tokens after it.

        The entry is chosen as mlx-lm's ``LRUPromptCache`` chooses it (:meth:`_nearest`), and
        stays as it was. mlx-lm deep-copies the whole entry, then trims a longer one to the
        shared prefix: on a GPU host under load that cost 1-4 ms of the worker's time per
        request, while everyone in the burst waited, and often for a prefix of a few template
        tokens. Standard KV caches are instead handed over as each layer's arrays sliced to
        the prefix (see :func:`prefix_of`); other kinds of cache are deep-copied, as mlx-lm
        does.

        Never an empty rest: an exact hit keeps all but the last token, whose logits the
        request needs, and one whose cache cannot be trimmed is not used.
        """
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        entry, length, keep = self._nearest(model, tokens)
        if entry is None or keep <= 0:
            return None, list(tokens)
        layers = entry.prompt_cache
        if all(is_plain_kv(layer) for layer in layers):
            return [prefix_of(layer, keep) for layer in layers], list(tokens[keep:])
        if keep < length and not can_trim_prompt_cache(layers):  # only an exact hit gets here
            return None, list(tokens)
        cache = copy.deepcopy(layers)
        if keep < length:
            trim_prompt_cache(cache, length - keep)
        return cache, list(tokens[keep:])

    def _nearest(self, model: Any, tokens: list[int]) -> tuple[Any, int, int]:
        """The stored entry to serve ``tokens`` from, its length, and how many tokens to keep.

        mlx-lm's choice: an exact hit; otherwise the longest stored prefix (of two tokens or
        more), unless more tokens are shared with a longer entry that can be trimmed. mlx-lm's
        ``PromptTrie.search`` looks for the shortest such entry, copying a list at every node
        it visits below the shared tokens (``bench_cache_lookup``: 1.5-2.4 ms per lookup with 16
        stored conversations that share a chat template's first tokens with the prompt, 9 ms
        with 64). Every entry below the shared tokens holds the same prefix, so this takes the
        first one going down. ``(None, 0, 0)`` when nothing is shared.
        """
        from mlx_lm.models.cache import can_trim_prompt_cache

        node = self._lru._trie._trie.get(model)
        if node is None or not tokens:
            return None, 0, 0
        shared = stored = 0
        found = None
        for token in tokens:
            child = node.get(token)
            if child is None:
                break
            node, shared = child, shared + 1
            if VALUE in node:
                stored, found = shared, node[VALUE]
        if stored == len(tokens):
            return found, stored, stored - 1
        if stored < 2:
            stored, found = 0, None
        if shared > stored:
            length = shared
            while VALUE not in node:  # every key of a node without an entry is a token
                node = node[next(iter(node))]
                length += 1
            if can_trim_prompt_cache(node[VALUE].prompt_cache):
                return node[VALUE], length, min(len(tokens) - 1, shared)
        return found, stored, stored

    def insert_cache(
        self, model: Any, tokens: list[int], cache: Any, cache_type: str = "assistant"
    ) -> None:
        """Store ``cache`` (holding exactly ``tokens``), evicting to stay within the caps."""
        if self.max_size <= 0 or self.max_bytes <= 0:
            return  # would be evicted at once, after walks of the trie as long as the tokens
        kept = self._detach_system_prefixes(model, tokens)
        self._lru.insert_cache(model, tokens, cache, cache_type=cache_type)
        for prefix, entry in kept:
            self._lru.insert_cache(model, prefix, entry.prompt_cache, cache_type="system")

    def _detach_system_prefixes(self, model: Any, tokens: list[int]) -> list[tuple[list[int], Any]]:
        # Taken out before mlx-lm's insert (which would drop them as prefixes), put back after.
        lru = self._lru
        node = lru._trie._trie.get(model)
        found: list[tuple[list[int], Any]] = []
        for length, token in enumerate(tokens):
            if node is None:
                break
            entry = node.get(VALUE)
            if length > 0 and entry is not None and entry.cache_type == "system":
                found.append((tokens[:length], entry))
            node = node.get(token)
        for prefix, entry in found:
            lru._trie.pop(model, prefix)
            lru._lru.remove(model, prefix)
            lru._n_bytes -= entry.nbytes
            lru._n_bytes_by_type["system"] -= entry.nbytes
        return found


def is_plain_kv(layer: Any) -> bool:
    """Whether ``layer`` is a standard ``KVCache`` (not rotating, quantised or batched).

    mlx-lm's, or mlx-vlm's for a vision model's language model (the same class, copied).
    """
    return type(layer) in _plain_kv_types() and layer.keys is not None


def _plain_kv_types() -> tuple[type, ...]:
    from mlx_lm.models.cache import KVCache

    # mlx-vlm's module is only looked at once something imported it (a vision model loaded).
    vision = sys.modules.get("mlx_vlm.models.cache")
    return (KVCache,) if vision is None else (KVCache, vision.KVCache)


def prefix_of(layer: Any, keep: int) -> Any:
    """A new cache of ``layer``'s class holding its first ``keep`` tokens (no copy made now).

    MLX arrays are values: the slices share the stored entry's memory, and the first write
    past them makes ``KVCache`` copy what it keeps into a buffer of its own (so does the
    batch, which merges caches into one). The entry never changes.
    """
    prefix = type(layer)()
    prefix.keys = layer.keys[..., :keep, :]
    prefix.values = layer.values[..., :keep, :]
    prefix.offset = keep
    return prefix
