"""OpenAI-style chat messages brought into the one shape every chat template expects.

Every door (Python, the widget, ``evaluate()``, the HTTP API) hands messages to the engine as it
got them; the engine normalises them here, once, before a request is queued, so a malformed
message is refused before any work is spent on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlxnb.errors import InvalidRequestError


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Bring OpenAI-style messages into the shape chat templates expect.

    Text content parts are joined, ``developer`` becomes ``system`` (templates know only the
    latter), ``reasoning`` is accepted as ``reasoning_content``, and tool-call arguments given as
    JSON strings are decoded (templates expect objects).

    Raises:
        InvalidRequestError: No messages, or a message without a role.
    """
    if not messages:
        raise InvalidRequestError("messages must contain at least one message")
    normalized = []
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{position}] needs a string 'role'")
        item = dict(message)
        if item["role"] == "developer":
            item["role"] = "system"
        content = item.get("content")
        if isinstance(content, list):
            item["content"] = "".join(
                part.get("text", "") for part in content if isinstance(part, Mapping)
            )
        elif content is None:
            item["content"] = ""
        if "reasoning" in item and "reasoning_content" not in item:
            item["reasoning_content"] = item.pop("reasoning")
        if item.get("tool_calls"):
            item["tool_calls"] = [_decode_call(call) for call in item["tool_calls"]]
        normalized.append(item)
    return normalized


def _decode_call(call: Mapping[str, Any]) -> dict[str, Any]:
    call = dict(call)
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise InvalidRequestError(f"tool-call arguments are not valid JSON: {error}") from error
    call["function"] = function
    return call
