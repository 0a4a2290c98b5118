"""Content parts: images taken out of OpenAI-style messages, and user messages made with them.

Every door hands images over in its own shape: the HTTP API as OpenAI content parts (data URLs,
and ``http(s)`` URLs when the user turns them on), Python helpers as ``images=`` arguments.
:func:`split_content` walks OpenAI-style messages, loads their image parts in order and leaves
``{"type": "image"}`` placeholders where they stood, the shape mlx-vlm and Hugging Face chat
templates expect; :func:`user_message` builds such a message; :func:`no_vision_error` is the one
refusal for images sent to a text-only model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlxnb._images.load import load_located
from mlxnb._images.policy import (
    DEFAULT_LIMITS,
    HTTP_POLICY,
    ImageLimits,
    ImagePolicy,
    check_count,
)
from mlxnb._images.value import Image, require_pillow
from mlxnb.errors import InvalidRequestError

__all__ = ["no_vision_error", "split_content", "user_message"]


def user_message(text: str, images: object = None) -> dict[str, Any]:
    """A user message with image parts first, then the text (the order VLM templates expect).

    The images are not loaded here; :func:`split_content` loads them with the caller's policy.

    Args:
        text: The prompt text.
        images: One image, a list/tuple of them, or None.

    Returns:
        ``{"role": "user", "content": [{"type": "image", "image": ...}, ..., text part]}``,
        or plain string content when there are no images.
    """
    if images is None:
        return {"role": "user", "content": text}
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    parts: list[dict[str, Any]] = [{"type": "image", "image": item} for item in items]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def split_content(
    messages: Sequence[Mapping[str, Any]],
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    policy: ImagePolicy = HTTP_POLICY,
) -> tuple[list[dict[str, Any]], list[Image]]:
    """Take the images out of OpenAI-style messages, leaving placeholders where they stood.

    Image parts are ``{"type": "image_url", "image_url": {"url": ...}}`` (or with the URL as a
    plain string), ``{"type": "input_image", "image_url": ...}`` (the Responses API) and
    ``{"type": "image", "image" | "url" | "path": <anything load_image takes>}``. Each becomes
    ``{"type": "image"}``; every other part is kept as it is, in place. Messages without image
    parts come back as shallow copies, content untouched; the input is never modified. The
    count limit is checked over all messages before any image is loaded or fetched.

    Args:
        messages: OpenAI-style messages.
        limits: Limits for every image and their count.
        policy: What may be read (:data:`HTTP_POLICY` unless given).

    Returns:
        The messages with placeholders, and the images in the order of the placeholders.

    Raises:
        InvalidRequestError: A malformed image part, too many images, or an image
            :func:`load_image` refuses (the message names where: ``messages[1].content[0]``).
    """
    found: list[tuple[int, int, object]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages[{index}] must be an object")
        for position, part in _content_parts(message):
            if _is_image_part(part):
                where = f"messages[{index}].content[{position}]"
                found.append((index, position, _part_source(part, where)))
    check_count(len(found), limits)
    if not found:
        return [dict(message) for message in messages], []
    require_pillow()
    images = [
        load_located(source, limits, policy, f"messages[{index}].content[{position}]")
        for index, position, source in found
    ]
    holding = {index for index, _, _ in found}
    split = [
        _with_placeholders(message) if index in holding else dict(message)
        for index, message in enumerate(messages)
    ]
    return split, images


def _content_parts(message: Mapping[str, Any]) -> list[tuple[int, Any]]:
    content = message.get("content")
    if isinstance(content, (list, tuple)):
        return list(enumerate(content))
    return []


def _is_image_part(part: object) -> bool:
    return isinstance(part, Mapping) and part.get("type") in ("image_url", "input_image", "image")


def _part_source(part: Mapping[str, Any], where: str) -> object:
    kind = part["type"]
    if kind == "image":
        for key in ("image", "url", "path"):
            if part.get(key) is not None:
                return part[key]
        raise InvalidRequestError(f"{where}: an 'image' part needs an 'image' (or 'url') value")
    value = part.get("image_url")
    if isinstance(value, Mapping):
        value = value.get("url")
    if isinstance(value, str) and value:
        return value
    if kind == "input_image" and part.get("file_id"):
        raise InvalidRequestError(
            f"{where}: file_id images are not supported; send the image as a data: URL"
        )
    raise InvalidRequestError(
        f"{where}: an {kind!r} part needs 'image_url' as a URL string or {{'url': ...}}"
    )


def _with_placeholders(message: Mapping[str, Any]) -> dict[str, Any]:
    item = dict(message)
    item["content"] = [
        {"type": "image"} if _is_image_part(part) else part for part in message["content"]
    ]
    return item


def no_vision_error(model_id: str, count: int) -> InvalidRequestError:
    """The refusal for images sent to a text-only model (the same words in every door)."""
    return InvalidRequestError(
        f"{model_id} is a text-only model: it cannot see images ({count} sent). Load a vision "
        "model (for example 'mlx-community/Qwen2.5-VL-3B-Instruct-4bit') or leave the images out."
    )
