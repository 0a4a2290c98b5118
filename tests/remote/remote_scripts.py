"""Shared pieces of the remote tests: the server's API key, a scripted tool turn, its tool."""

from __future__ import annotations

API_KEY = "remote-secret-key-4711"

TOOL_TURN = (
    "say:<think>\nI should add them.\n</think>\n\n"
    '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
)
"""A user message the scripted server answers with thinking, then a call of ``add``."""


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b
