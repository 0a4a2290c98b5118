"""Where the offline fixtures cache what they fetch and build."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Return (and create) a directory under mlxnb's cache.

    The root is ``$MLXNB_CACHE`` if set, else ``$XDG_CACHE_HOME/mlxnb`` or ``~/.cache/mlxnb``.

    Args:
        *parts: Sub-directories below the cache root.

    Returns:
        The directory, created if missing.
    """
    root = os.environ.get("MLXNB_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "mlxnb"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
