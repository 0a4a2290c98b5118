"""Scripted model replies and Python tools shared by the widget tests."""

from __future__ import annotations

ANSWER = "Here is **code**:\n\n```python\nprint('hi')\n```"
THINK_ANSWER = f"<think>\nThe user wants code.\n</think>\n\n{ANSWER}"
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
BOOM_CALL = '<tool_call>\n{"name": "boom", "arguments": {"reason": "Mars"}}\n</tool_call>'


def get_weather(city: str) -> dict[str, str]:
    """Get the current weather.

    Args:
        city: The city's name.
    """
    return {"city": city, "sky": "sunny"}


def boom(reason: str) -> str:
    """A tool that fails."""
    raise RuntimeError(f"no data for {reason}")
