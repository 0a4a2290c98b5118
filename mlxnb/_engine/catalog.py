"""The models on this machine, found offline: model directories and the Hugging Face cache.

Nothing here touches the network or MLX: it reads directory listings, ``config.json`` files and
file sizes, so listing is cheap enough to run whenever a picker opens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlxnb._engine.backend import _looks_like_repo_id, read_config
from mlxnb._engine.vision import kind_of

INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class LocalModel:
    """A model found on this machine.

    Attributes:
        name: Its public name: the repo id for the Hugging Face cache, else the directory name.
        path: The directory to load (for the cache, the snapshot folder).
        kind: ``"text"`` or ``"vision"``, from its ``config.json``.
        size_bytes: The weights on disk (the sum of its ``*.safetensors`` files).
        source: ``"directory"`` (found under a given folder) or ``"hf-cache"``.
    """

    name: str
    path: Path
    kind: Literal["text", "vision"]
    size_bytes: int
    source: Literal["directory", "hf-cache"]


def model_name(ref: str | Path, adapter_path: str | Path | None = None) -> str:
    """The public name of a model reference, never an absolute path.

    Args:
        ref: A Hugging Face repo id, a local model directory, or a snapshot folder in the
            Hugging Face cache.
        adapter_path: LoRA adapters applied to it: their folder's name follows a ``+``.

    Returns:
        The repo id as given (``"mlx-community/Qwen3-0.6B-4bit"``); ``org/name`` for a path
        inside the cache (``.../models--org--name/snapshots/<rev>``); else the directory's name.
        With adapters, ``"<that>+<the adapters' folder name>"``.
    """
    if adapter_path is not None:
        return f"{model_name(ref)}+{Path(os.path.abspath(Path(adapter_path).expanduser())).name}"
    text = str(ref)
    path = Path(text).expanduser()
    if _looks_like_repo_id(text) and not path.exists():
        return text
    from_cache = _cache_repo_id(path)
    if from_cache is not None:
        return from_cache
    return Path(os.path.abspath(path)).name or "model"  # only "/" has no name


def _cache_repo_id(path: Path) -> str | None:
    parts = path.parts
    for index, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[index + 1] == "snapshots":
            return "/".join(part.split("--")[1:]) or None
    return None


def estimate_bytes(path: Path) -> int:
    """The bytes of weights a model directory holds (its ``*.safetensors`` files).

    Symbolic links are followed, so a Hugging Face snapshot counts its blobs.

    Args:
        path: A model directory.

    Returns:
        The total size; ``0`` when ``path`` holds no safetensors (or is not a directory).
    """
    return sum(file.stat().st_size for file in _weights(Path(path)))


def _weights(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(file for file in path.glob("*.safetensors") if file.is_file())


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` holds a loadable MLX model, offline.

    That is ``config.json`` and at least one ``*.safetensors`` file, with every shard its
    ``model.safetensors.index.json`` names when it has one (so a partial download is not one).
    """
    if not (path / "config.json").is_file() or not _weights(path):
        return False
    index = path / INDEX_FILE
    if not index.is_file():
        return True
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return all((path / str(shard)).is_file() for shard in shards)


def _local_model(
    name: str, path: Path, source: Literal["directory", "hf-cache"]
) -> LocalModel | None:
    if not is_model_dir(path):
        return None
    config = read_config(path)
    if config is None:
        return None
    return LocalModel(name, path, kind_of(config), estimate_bytes(path), source)


def scan_directories(paths: Iterable[Path]) -> list[LocalModel]:
    """The models in the given folders: each folder that is a model, or its direct children.

    A model is a directory with ``config.json`` and at least one ``*.safetensors`` file (all
    shards present when it has an index). Missing folders and hidden children are skipped.

    Args:
        paths: Folders to look in.

    Returns:
        The models found, in the order given (children by name), each directory once.
    """
    found: list[LocalModel] = []
    seen: set[Path] = set()
    for folder in paths:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        if is_model_dir(folder):
            candidates = [folder]
        else:
            candidates = sorted(
                child
                for child in folder.iterdir()
                if child.is_dir() and not child.name.startswith(".")
            )
        for candidate in candidates:
            key = candidate.resolve()
            if key in seen:
                continue
            model = _local_model(model_name(candidate), candidate, "directory")
            if model is not None:
                seen.add(key)
                found.append(model)
    return found


def scan_hf_cache(cache_dir: Path | None = None) -> list[LocalModel]:
    """The loadable models in the local Hugging Face hub cache, found without network.

    Each model repo's snapshot for ``main`` (else its newest snapshot) is listed when it holds
    ``config.json`` and complete safetensors weights: GGUF-only repos, partial downloads and
    datasets are skipped.

    Args:
        cache_dir: The hub cache (default: ``huggingface_hub``'s ``HF_HUB_CACHE``).

    Returns:
        The models, sorted by repo id.
    """
    from huggingface_hub import constants

    root = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()
    if not root.is_dir():
        return []
    snapshots = _cached_snapshots(root)
    found = [
        model
        for repo_id, snapshot in sorted(snapshots.items())
        if (model := _local_model(repo_id, snapshot, "hf-cache")) is not None
    ]
    return found


def _cached_snapshots(root: Path) -> dict[str, Path]:
    """Repo id → the snapshot to use, through ``scan_cache_dir`` or, when it fails, the layout."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(root)
    except Exception:  # an unreadable cache: fall back to reading the layout ourselves
        return _walk_snapshots(root)
    chosen: dict[str, Path] = {}
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        main = [rev for rev in repo.revisions if "main" in rev.refs]
        revision = main[0] if main else max(repo.revisions, key=lambda rev: rev.last_modified)
        chosen[repo.repo_id] = Path(revision.snapshot_path)
    return chosen


def _walk_snapshots(root: Path) -> dict[str, Path]:
    chosen: dict[str, Path] = {}
    for repo_dir in root.glob("models--*"):
        snapshots = repo_dir / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo_dir / "refs" / "main"
        snapshot = snapshots / ref.read_text().strip() if ref.is_file() else None
        if snapshot is None or not snapshot.is_dir():
            revisions = [child for child in snapshots.iterdir() if child.is_dir()]
            if not revisions:
                continue
            snapshot = max(revisions, key=lambda child: child.stat().st_mtime)
        chosen["/".join(repo_dir.name.split("--")[1:])] = snapshot
    return chosen
