"""Per-user folders, in one place: where mlxnb caches what it builds and keeps what it records.

Both follow the platform's convention (XDG on Linux, ``~/Library`` on macOS) and can be moved
with an environment variable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    """Mlxnb's per-user data folder (not created).

    ``~/Library/Application Support/mlxnb`` on macOS, ``$XDG_DATA_HOME/mlxnb`` (default
    ``~/.local/share/mlxnb``) elsewhere.
    """
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "mlxnb"


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
