"""``@name`` mentions in chat messages: the kernel's names to complete, and what a mention adds.

The page asks for the names it may complete (:func:`namespace_names`: the user's variables, no
``_``-prefixed names, modules or IPython's own), and a sent message's mentions are resolved
against the same namespace (:func:`resolve_mentions`): each known name adds its description
(:mod:`mlxnb._describe`) below the message for the model, and an entry to the turn's
``context`` for the page, which shows what was inserted. A matplotlib figure goes along as an
image when the model can see images. Unknown names stay as text, with a note saying so.
Mentions inside code (a fenced block or an inline code span) are left alone.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mlxnb._describe import describe, kind_of
from mlxnb._images import PYTHON_POLICY, Image, load_image

MENTION: Final = re.compile(r"(?<![\w@.])@([A-Za-z_]\w*)")
_CODE: Final = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
MAX_NAMES: Final = 500
"""Most names one completion reply carries."""
MAX_MENTIONS: Final = 8
"""Most mentions one message resolves (later ones stay as text, with a note)."""
UNKNOWN: Final = "no variable of this name in the kernel: sent as written"
HEADER: Final = "Notebook context (the kernel's variables mentioned above):"


def user_namespace() -> tuple[Mapping[str, Any], frozenset[str]]:
    """The IPython user namespace and the names IPython put there itself (empty outside)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return {}, frozenset()
    shell = get_ipython()
    if shell is None:
        return {}, frozenset()
    return shell.user_ns, frozenset(getattr(shell, "user_ns_hidden", ()))


def visible(name: str, value: object, hidden: Iterable[str] = ()) -> bool:
    """Whether a name is one of the user's variables (mentionable, offered for completion)."""
    return (
        name.isidentifier()
        and not name.startswith("_")
        and name not in hidden
        and not isinstance(value, types.ModuleType)
    )


def namespace_names(
    namespace: Mapping[str, Any], hidden: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The user's variables as ``(name, kind)`` pairs, sorted, at most :data:`MAX_NAMES`."""
    hidden = frozenset(hidden)
    found = sorted(
        (name, value) for name, value in list(namespace.items()) if visible(name, value, hidden)
    )
    return [(name, kind_of(value)) for name, value in found[:MAX_NAMES]]


def find_mentions(text: str) -> list[str]:
    """The names ``@``-mentioned in ``text`` (outside code), each once, in order."""
    prose = _CODE.sub(lambda match: " " * len(match.group()), text)
    return list(dict.fromkeys(MENTION.findall(prose)))


@dataclass
class Mentions:
    """A message with its mentions resolved.

    Attributes:
        message: What the model reads: the text as written, then the descriptions.
        context: One entry per mention for the page: ``{"name", "kind", "text", "found"}``,
            plus ``"image"`` (a thumbnail ``data:`` URL) for a figure sent as an image.
        images: The figures sent as images, in order.
    """

    message: str
    context: list[dict[str, Any]] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def resolve_mentions(
    text: str,
    namespace: Mapping[str, Any],
    hidden: Iterable[str] = (),
    *,
    vision: bool = False,
) -> Mentions:
    """Resolve the ``@name`` mentions of a message against a namespace.

    Args:
        text: The message as the user wrote it.
        namespace: Where names are looked up (the kernel's user namespace).
        hidden: Names that are not the user's (IPython's own).
        vision: Whether the model can see images (a mentioned figure is then sent as one).

    Returns:
        The message for the model, the context entries for the page, the figures' images.
    """
    names = find_mentions(text)
    if not names:
        return Mentions(text)
    hidden = frozenset(hidden)
    result = Mentions(text)
    blocks: list[str] = []
    for index, name in enumerate(names):
        if index >= MAX_MENTIONS:
            result.context.append(_note(name, f"more than {MAX_MENTIONS} mentions: sent as text"))
            continue
        value = namespace.get(name, _MISSING)
        if value is _MISSING or not visible(name, value, hidden):
            result.context.append(_note(name, UNKNOWN))
            continue
        entry, block, image = _describe_entry(name, value, vision, len(result.images))
        result.context.append(entry)
        blocks.append(block)
        if image is not None:
            result.images.append(image)
    if blocks:
        result.message = "\n\n".join([text, HEADER, *blocks])
    return result


_MISSING: Final = object()


def _note(name: str, why: str) -> dict[str, Any]:
    return {"name": name, "kind": "", "text": why, "found": False}


def _describe_entry(
    name: str, value: object, vision: bool, images_before: int
) -> tuple[dict[str, Any], str, Image | None]:
    description = describe(name, value)
    text = description.text
    image: Image | None = None
    if description.figure is not None:
        if vision:
            try:
                image = load_image(description.figure, policy=PYTHON_POLICY)
                text += f"\n(the figure is attached as image {images_before + 1})"
            except Exception as exc:  # a figure that cannot be drawn is described only
                text += f"\n(the figure could not be drawn as an image: {exc})"
        else:
            text += "\n(the model cannot see images, so only this description is sent)"
    entry: dict[str, Any] = {"name": name, "kind": description.kind, "text": text, "found": True}
    if image is not None:
        entry["image"] = image.thumbnail_data_url()
    return entry, f"@{name} ({description.kind}):\n```\n{text}\n```", image
