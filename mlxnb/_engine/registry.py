"""The names a pool knows: registered models and profiles.

Models come by hand, from folders, or from the Hugging Face cache. Resolving a name to a model
happens here; loading does not (see :mod:`mlxnb._engine.pool`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlxnb._engine.catalog import LocalModel, model_name, scan_directories, scan_hf_cache
from mlxnb._engine.profiles import Profile
from mlxnb._engine.residency import PoolEntry
from mlxnb.errors import InvalidRequestError, ModelNotFoundError

HF_CACHE_RESCAN_S = 30.0


class ModelRegistry:
    """Models and profiles by name: the allow-list the doors (and HTTP) may use.

    Args:
        engine_options: Options for every engine started for these models.
        hf_cache: Register the models already in the local Hugging Face cache (scanned
            offline, again at most every 30 s); ``True`` for the default cache, or its path.
    """

    def __init__(
        self,
        *,
        engine_options: Mapping[str, Any] | None = None,
        hf_cache: bool | str | Path = False,
    ) -> None:
        self.engine_options = dict(engine_options or {})
        self._entries: dict[str, PoolEntry] = {}
        self._profiles: dict[str, Profile] = {}
        self._lock = threading.RLock()
        # None: not scanned; "default": huggingface_hub's cache; else that folder.
        self._hf_cache: Path | str | None = (
            None if hf_cache is False else "default" if hf_cache is True else Path(hf_cache)
        )
        self._hf_scanned = -float("inf")

    def register(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        pin: bool = False,
        **engine_options: Any,
    ) -> str:
        """Make a model known by name (allowed over HTTP) without loading it.

        Args:
            model: A local model directory or a Hugging Face repo id.
            name: The name to use (default: the repo id, or the directory's name).
            pin: Never evict it.
            **engine_options: Options for its engine (see :class:`Engine`).

        Returns:
            The model's name.

        Raises:
            InvalidRequestError: The name is taken by another model or a profile.
        """
        ref = (
            str(Path(model).expanduser()) if Path(str(model)).expanduser().is_dir() else str(model)
        )
        with self._lock:
            if name is None:
                name = self._free_name(ref, engine_options.get("adapter_path"))
            if name in self._profiles:
                raise InvalidRequestError(f"{name!r} is already a profile's name")
            entry = self._entries.get(name)
            if entry is not None and entry.ref != ref:
                raise InvalidRequestError(f"{name!r} already names {entry.ref}; pass name=")
            if entry is None:
                entry = PoolEntry(name, ref, {**self.engine_options, **engine_options}, pinned=pin)
                self._entries[name] = entry
            elif engine_options and not entry.resident:
                entry.options = {**self.engine_options, **engine_options}
            entry.pinned = entry.pinned or pin
        return name

    def _free_name(self, ref: str, adapter_path: str | Path | None = None) -> str:
        """``ref``'s name (with its adapters'), or that with a number when another model has it.

        The same model with other LoRA adapters (or none) is another model: another name.
        """
        adapters = None if adapter_path is None else str(adapter_path)
        for entry in self._entries.values():
            theirs = entry.options.get("adapter_path")
            same = adapters == (None if theirs is None else str(theirs))
            if entry.ref == ref and same and "#" not in entry.name:
                return entry.name
        base = model_name(ref, adapter_path)
        name, number = base, 2
        while name in self._entries or name in self._profiles:
            name, number = f"{base}-{number}", number + 1
        return name

    def add_directory(self, directory: str | Path) -> list[str]:
        """Register every model in ``directory`` (itself a model, or a folder of models)."""
        return [
            self.register(found.path, name=found.name) for found in self._scan([Path(directory)])
        ]

    @staticmethod
    def _scan(directories: list[Path]) -> list[LocalModel]:
        return scan_directories(directories)

    def add_profile(self, profile: Profile) -> Profile:
        """Register a profile; its model is registered too. Returns it."""
        with self._lock:
            if profile.name in self._entries:
                raise InvalidRequestError(f"{profile.name!r} is already a model's name")
        model = profile.model if profile.model in self._entries else self.register(profile.model)
        if model != profile.model:
            profile = Profile(
                profile.name, model, profile.system, profile.enable_thinking, profile.sampling
            )
        with self._lock:
            self._profiles[profile.name] = profile
        return profile

    def _scan_hf_cache(self) -> None:
        """Register models found in the Hugging Face cache since the last scan (throttled)."""
        if self._hf_cache is None or time.monotonic() - self._hf_scanned < HF_CACHE_RESCAN_S:
            return
        self._hf_scanned = time.monotonic()
        cache_dir = self._hf_cache if isinstance(self._hf_cache, Path) else None
        for found in scan_hf_cache(cache_dir):
            with self._lock:
                if found.name in self._entries or found.name in self._profiles:
                    continue
                self.register(found.path, name=found.name)

    def names(self) -> list[str]:
        """Every model and profile name, models first."""
        self._scan_hf_cache()
        with self._lock:
            return [*(key for key in self._entries if "#" not in key), *self._profiles]

    def profiles(self) -> dict[str, Profile]:
        """The registered profiles by name."""
        with self._lock:
            return dict(self._profiles)

    def lookup(self, name: str) -> tuple[str, Profile | None]:
        """The model name behind ``name`` and the profile it is, if any.

        Raises:
            ModelNotFoundError: Neither a registered model nor a profile (the message lists both).
        """
        self._scan_hf_cache()
        with self._lock:
            profile = self._profiles.get(name)
            if profile is not None:
                return profile.model, profile
            if name in self._entries:
                return name, None
            for entry in self._entries.values():
                if entry.ref == name:
                    return entry.name, None
        available = ", ".join(self.names()) or "none"
        raise ModelNotFoundError(f"model {name!r} is not registered; available: {available}")
