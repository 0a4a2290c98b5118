"""System-prompt KV caches kept on disk, so the next kernel skips a long system prompt's prefill.

Opt-in (``Engine(prompt_cache_dir=…)``). When the batch has prefilled a system prompt of at least
``min_tokens`` tokens, its KV cache is queued here and written while the engine is idle (saving
is MLX work, so it runs on the worker, never in the middle of other requests' steps). A new
engine on the same model (same fingerprint: name, config and weight files) loads those entries
into its prompt cache at start. The directory stays under ``max_bytes``: the least recently
used files go first. Vision models keep no prompt cache, so nothing is written for them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIX = ".safetensors"


def model_fingerprint(path: str | Path, name: str, adapter_path: str | Path | None = None) -> str:
    """What identifies a model's KV caches: its name, ``config.json`` and weight files.

    A changed weight file (other size or modification time) gives another fingerprint, so a
    cache from other weights is never loaded. A repo id without a local folder falls back to
    the name alone. LoRA adapters change every layer's keys and values, so their folder's
    config and weights count as the model's (two folders both named ``adapters`` differ).
    """
    digest = hashlib.sha256(name.encode())
    _add_folder(digest, Path(str(path)).expanduser(), "config.json")
    if adapter_path is not None:
        adapters = Path(str(adapter_path)).expanduser()
        digest.update(f"adapters:{adapters.resolve()}".encode())
        _add_folder(digest, adapters, "adapter_config.json")
    return digest.hexdigest()[:24]


def _add_folder(digest: Any, folder: Path, config_name: str) -> None:
    """Add a folder's config file (its bytes) and weight files (name, size, time) to ``digest``."""
    if not folder.is_dir():
        return
    config = folder / config_name
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())


@dataclass
class DiskPromptCache:
    """A folder of saved system-prompt caches for one model (mutable: pending saves).

    Args:
        directory: The folder (shared by every model; each has a subfolder).
        max_bytes: Most bytes the whole folder may hold.
        min_tokens: Shortest prompt prefix worth saving.
    """

    directory: Path
    max_bytes: int = 2 << 30
    min_tokens: int = 256
    fingerprint: str | None = None
    _pending: list[tuple[list[int], Any]] = field(default_factory=list)

    def bind(self, fingerprint: str) -> None:
        """Use this model's subfolder (called once the model is loaded)."""
        self.fingerprint = fingerprint

    @property
    def folder(self) -> Path:
        """This model's subfolder."""
        assert self.fingerprint is not None, "bind() the model first"
        return self.directory / self.fingerprint

    def queue(self, tokens: list[int], cache: Any) -> None:
        """Remember a system prompt's cache to write when the engine is idle."""
        if self.fingerprint is not None and len(tokens) >= self.min_tokens:
            self._pending.append((list(tokens), cache))

    @property
    def pending(self) -> bool:
        """Whether saves are waiting."""
        return bool(self._pending)

    def flush(self) -> int:
        """Write the queued caches (on the worker thread: MLX evaluates them); returns how many."""
        from mlx_lm.models.cache import save_prompt_cache

        written = 0
        pending, self._pending = self._pending, []
        self.folder.mkdir(parents=True, exist_ok=True)
        for tokens, cache in pending:
            target = self.folder / (_name(tokens) + SUFFIX)
            if target.exists():
                os.utime(target)  # used again: keep it longer
                continue
            partial = target.with_suffix(".partial" + SUFFIX)
            save_prompt_cache(str(partial), cache, {"tokens": json.dumps(tokens)})
            partial.replace(target)  # a crash mid-write never leaves a readable half file
            written += 1
        self.prune()
        return written

    def load(self, max_bytes: int) -> Iterator[tuple[list[int], Any]]:
        """This model's saved caches, most recently used first, up to ``max_bytes`` of files.

        A file that cannot be read (cut short, another format) is skipped and removed.
        """
        from mlx_lm.models.cache import load_prompt_cache

        if self.fingerprint is None or not self.folder.is_dir():
            return
        used = 0
        files = sorted(self.folder.glob("*" + SUFFIX), key=_mtime, reverse=True)
        for path in files:
            if ".partial" in path.name:
                continue
            size = path.stat().st_size
            if used + size > max_bytes:
                break
            try:
                cache, metadata = load_prompt_cache(str(path), return_metadata=True)
                tokens = [int(t) for t in json.loads(metadata["tokens"])]
            except Exception:  # a damaged file must not stop the engine
                path.unlink(missing_ok=True)
                continue
            used += size
            os.utime(path)
            yield tokens, cache

    def prune(self) -> None:
        """Remove the least recently used files until the folder fits ``max_bytes``."""
        files = sorted(self.directory.glob("*/*" + SUFFIX), key=_mtime)
        total = sum(path.stat().st_size for path in files)
        for path in files:
            if total <= self.max_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)


def _name(tokens: list[int]) -> str:
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:32]


def _mtime(path: Path) -> float:
    return path.stat().st_mtime
