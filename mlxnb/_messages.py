"""OpenAI-style chat messages brought into the one shape every chat template expects.

Every door (Python, the widget, ``evaluate()``, the HTTP API) hands messages to the engine as it
got them; the engine normalises them here, once, before a request is queued, so a malformed
message is refused before any work is spent on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlxnb._images import (
    DEFAULT_LIMITS,
    HTTP_POLICY,
    Image,
    ImageLimits,
    ImagePolicy,
    split_content,
)
from mlxnb.errors import InvalidRequestError


@dataclass(frozen=True)
class Normalized:
    """Messages in the shape templates expect, and the images they carried.

    Attributes:
        messages: The messages; a message with images keeps list content, where each image
            became a ``{"type": "image"}`` placeholder beside ``{"type": "text"}`` parts.
        images: The images, loaded and checked, in the order they appear.
    """

    messages: list[dict[str, Any]]
    images: tuple[Image, ...] = ()


def normalize_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    policy: ImagePolicy = HTTP_POLICY,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> Normalized:
    """Bring OpenAI-style messages into the shape chat templates expect.

    Image parts are loaded and checked (what may be read is ``policy``'s call) and replaced by
    placeholders. Text content parts are joined, ``developer`` becomes ``system`` (templates
    know only the latter), ``reasoning`` is accepted as ``reasoning_content``, and tool-call
    arguments given as JSON strings are decoded (templates expect objects).

    Raises:
        InvalidRequestError: No messages, a message without a role, or an image that cannot be
            used (with the reason).
    """
    if not messages:
        raise InvalidRequestError("messages must contain at least one message")
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{position}] needs a string 'role'")
    with_placeholders, images = split_content(messages, limits=limits, policy=policy)
    return Normalized([_normalize(message) for message in with_placeholders], tuple(images))


def _normalize(message: Mapping[str, Any]) -> dict[str, Any]:
    item = dict(message)
    if item["role"] == "developer":
        item["role"] = "system"
    content = item.get("content")
    if isinstance(content, list):
        parts = [part for part in content if isinstance(part, Mapping)]
        if any(part.get("type") == "image" for part in parts):
            item["content"] = [_template_part(part) for part in parts]
        else:
            item["content"] = "".join(str(part.get("text", "")) for part in parts)
    elif content is None:
        item["content"] = ""
    if "reasoning" in item and "reasoning_content" not in item:
        item["reasoning_content"] = item.pop("reasoning")
    if item.get("tool_calls"):
        item["tool_calls"] = [_decode_call(call) for call in item["tool_calls"]]
    return item


def _template_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if part.get("type") == "image":
        return {"type": "image"}
    return {"type": "text", "text": str(part.get("text", ""))}


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
