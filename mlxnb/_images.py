"""Images in, for vision models: every kind of input brought to one checked, hashed value.

Every door hands images over in its own shape: the HTTP API as OpenAI content parts (data URLs,
and ``http(s)`` URLs when the user turns them on), Python code as notebook objects (Pillow
images, numpy arrays, matplotlib figures, paths, raw bytes). :func:`load_image` turns any of
them into one :class:`Image` — checked against :class:`ImageLimits`, hashed for the audit log —
and :func:`split_content` walks OpenAI-style messages, loads their image parts in order and
leaves ``{"type": "image"}`` placeholders where they stood, the shape mlx-vlm and Hugging Face
chat templates expect.

What may be read is decided by an :class:`ImagePolicy`: :data:`HTTP_POLICY` (the default
everywhere) never reads a local file and never fetches a URL; :data:`PYTHON_POLICY` reads paths,
since a Python caller already has the run of the machine. Remote fetching, when allowed, goes
through :func:`fetch_remote`, which refuses any address that is not public.

This module is a leaf: no MLX, and nothing of mlxnb's but :mod:`mlxnb.errors`. Pillow is
imported on first use, so importing the module costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeGuard
from urllib.parse import unquote_to_bytes, urljoin, urlsplit
from urllib.request import url2pathname

from mlxnb.errors import DependencyError, InvalidRequestError, WrongTypeError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_LIMITS",
    "HTTP_POLICY",
    "PYTHON_POLICY",
    "SUPPORTED_FORMATS",
    "AddressCheck",
    "IPAddress",
    "Image",
    "ImageLimits",
    "ImagePolicy",
    "fetch_remote",
    "is_public_address",
    "load_image",
    "load_images",
    "split_content",
    "user_message",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IP address, either family."""

AddressCheck = Callable[[IPAddress], bool]
"""Decides whether a remote image may be fetched from an address (True: it may)."""

SUPPORTED_FORMATS: Final = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})
"""The encodings an image may arrive in (Pillow's format names); GIFs give their first frame."""

_MIME_TYPES: Final = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
_FORMAT_ALIASES: Final = {"MPO": "JPEG"}  # multi-picture JPEGs (many phone photos) are JPEGs
_PNG_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_SNIFFED: Final = (  # names for refusals only; none of these is ever decoded
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"\x00\x00\x01\x00", "ICO"),
)
_ORIENTATION: Final = 0x0112  # the EXIF tag; values 5-8 turn the image a quarter
_QUARTER_TURNS: Final = frozenset({5, 6, 7, 8})
_URL_SCHEME: Final = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]+):"
)  # two letters at least: C:\ is a path
_SHOWN_CHARS: Final = 60
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024
_PNG_COMPRESS_LEVEL: Final = 1  # fast: the PNG only carries pixels to the model, never stored


# -- limits and policy -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLimits:
    """How much image one request may bring.

    Attributes:
        max_images: Images in one request, across all its messages.
        max_bytes: Encoded bytes of one image (data URL payload, download, file, raw bytes).
        max_pixels: Width x height of one image, checked from the header before decoding.
            Pillow's own ceiling (``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies above it.
        formats: Accepted encodings, a subset of :data:`SUPPORTED_FORMATS`.
        fetch_timeout: Seconds one remote fetch may take, redirects included.
        max_redirects: Redirects one remote fetch may follow.
    """

    max_images: int = 8
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    formats: frozenset[str] = SUPPORTED_FORMATS
    fetch_timeout: float = 10.0
    max_redirects: int = 3

    def __post_init__(self) -> None:
        for name in ("max_images", "max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"ImageLimits.{name} must be a positive int: {value!r}")
        if isinstance(self.max_redirects, bool) or not isinstance(self.max_redirects, int):
            raise InvalidRequestError(
                f"ImageLimits.max_redirects must be an int: {self.max_redirects!r}"
            )
        if self.max_redirects < 0:
            raise InvalidRequestError(
                f"ImageLimits.max_redirects must be >= 0: {self.max_redirects}"
            )
        if not self.fetch_timeout > 0:
            raise InvalidRequestError(
                f"ImageLimits.fetch_timeout must be > 0: {self.fetch_timeout!r}"
            )
        formats = frozenset(str(name).upper() for name in self.formats)
        unknown = formats - SUPPORTED_FORMATS
        if unknown or not formats:
            raise InvalidRequestError(
                f"ImageLimits.formats must be a non-empty subset of {_listed(SUPPORTED_FORMATS)}: "
                f"{_listed(unknown) if unknown else 'empty'}"
            )
        object.__setattr__(self, "formats", formats)


DEFAULT_LIMITS: Final = ImageLimits()
"""The limits every door uses unless told otherwise."""


def is_public_address(address: IPAddress) -> bool:
    """Whether a remote image may be fetched from ``address``: the strict, default check.

    Refused: loopback, private (RFC 1918, unique-local ``fc00::/7``), shared (``100.64/10``),
    link-local, multicast, reserved, unspecified, site-local, anything not globally routable,
    and the cloud metadata endpoints (``169.254.169.254``, ECS ``169.254.170.2``, Azure
    ``168.63.129.16``, Alibaba ``100.100.100.200``, Oracle ``192.0.0.192``, AWS
    ``fd00:ec2::/32``). IPv6 addresses that carry an IPv4 address (mapped ``::ffff:0:0/96``,
    6to4 ``2002::/16``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``) are judged by that
    IPv4 address; Teredo addresses are refused.

    Args:
        address: A resolved address.

    Returns:
        True if fetching from it is allowed.
    """
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return is_public_address(embedded)
    if any(address in network for network in _METADATA_NETWORKS):
        return False
    refused = (
        address.is_private,
        address.is_loopback,
        address.is_link_local,
        address.is_multicast,
        address.is_reserved,
        address.is_unspecified,
        isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
    )
    return address.is_global and not any(refused)


_METADATA_NETWORKS: Final = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.169.254/32",
        "169.254.170.2/32",
        "169.254.170.23/32",
        "168.63.129.16/32",
        "100.100.100.200/32",
        "192.0.0.192/32",
        "fd00:ec2::/32",
    )
)
_NAT64_NETWORKS: Final = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _NAT64_NETWORKS):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


@dataclass(frozen=True)
class ImagePolicy:
    """What may be read on a request's behalf.

    Attributes:
        allow_remote_images: Fetch ``http(s)`` image URLs (off by default; then only from
            addresses ``is_allowed_address`` accepts).
        allow_local_paths: Read ``pathlib.Path`` objects, plain path strings and ``file:``
            URLs. True for Python callers; never for requests that arrive over HTTP.
        is_allowed_address: The address check for remote fetches (:func:`is_public_address`;
            tests swap in a permissive one to fetch from a local server).
    """

    allow_remote_images: bool = False
    allow_local_paths: bool = False
    is_allowed_address: AddressCheck = field(default=is_public_address, repr=False)

    @classmethod
    def for_http(cls, *, allow_remote_images: bool = False) -> ImagePolicy:
        """The policy for requests over HTTP: never a local file."""
        return cls(allow_remote_images=allow_remote_images, allow_local_paths=False)

    @classmethod
    def for_python(cls, *, allow_remote_images: bool = False) -> ImagePolicy:
        """The policy for Python callers: paths are read, URLs fetched only when allowed."""
        return cls(allow_remote_images=allow_remote_images, allow_local_paths=True)


HTTP_POLICY: Final = ImagePolicy.for_http()
"""Data URLs only: no local files, no remote fetches. The default of every function here."""

PYTHON_POLICY: Final = ImagePolicy.for_python()
"""Python callers: notebook objects and paths; no remote fetches unless turned on."""


# -- the image value ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One checked image, ready for a vision model.

    ``data`` is the original encoded bytes when the image arrived encoded in a supported,
    single-frame format (PNG, JPEG, WEBP, BMP): nothing is re-encoded, JPEGs lose nothing more,
    and ``sha256`` equals ``sha256sum`` of the file that was sent. GIFs, animated images and
    in-memory objects (Pillow images, arrays, figures) are encoded as PNG (the first frame).
    EXIF orientation is honoured: ``width``/``height`` and :meth:`to_pil` are upright.

    Build images with :func:`load_image`; the constructor checks nothing.

    Attributes:
        data: The encoded image (see above).
        format: Its encoding, a key of :data:`SUPPORTED_FORMATS` (never GIF).
        width: Upright width in pixels.
        height: Upright height in pixels.
        sha256: Hex SHA-256 of ``data``, for the audit log (derived, not passed).
    """

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def mime_type(self) -> str:
        """The MIME type of ``data`` (``image/png``, ``image/jpeg`` …)."""
        return _MIME_TYPES.get(self.format, "application/octet-stream")

    @property
    def pixels(self) -> int:
        """Width x height."""
        return self.width * self.height

    def to_pil(self) -> PILImage.Image:
        """Decode to a Pillow image, upright, in its own mode (``L``, ``RGB``, ``RGBA`` …)."""
        _require_pillow()
        from PIL import Image as PILImage
        from PIL import ImageOps

        with PILImage.open(io.BytesIO(self.data)) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
        return upright

    def to_rgb(self) -> PILImage.Image:
        """Decode to an ``RGB`` Pillow image, transparency laid over white (what a model sees)."""
        return _flatten(self.to_pil())

    def data_url(self) -> str:
        """The image as a ``data:`` URL of its own bytes."""
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def thumbnail_data_url(self, max_side: int = 256, *, max_bytes: int = 30_000) -> str:
        """A small JPEG ``data:`` URL for a transcript: aspect kept, never enlarged.

        Args:
            max_side: Longest side of the thumbnail, in pixels.
            max_bytes: Most characters the whole data URL may have; quality, then size, drop
                until it fits.

        Returns:
            ``data:image/jpeg;base64,...`` of at most ``max_bytes`` characters.
        """
        if max_side < 1 or max_bytes < 1:
            raise InvalidRequestError(f"thumbnail sizes must be positive: {max_side}, {max_bytes}")
        _require_pillow()
        from PIL import Image as PILImage

        picture = _flatten(self.to_pil())
        picture.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
        while True:
            for quality in (85, 70, 55, 40, 25):
                url = _jpeg_data_url(picture, quality)
                if len(url) <= max_bytes or max(picture.size) <= 16:
                    return url
            smaller = (max(1, picture.width * 7 // 10), max(1, picture.height * 7 // 10))
            picture = picture.resize(smaller, PILImage.Resampling.LANCZOS)

    def summary(self) -> dict[str, str | int]:
        """What the audit log keeps of the image: hash, format, size — never the bytes."""
        return {
            "sha256": self.sha256,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": len(self.data),
        }


# -- loading -----------------------------------------------------------------------------------


def load_image(
    obj: object, *, limits: ImageLimits = DEFAULT_LIMITS, policy: ImagePolicy = HTTP_POLICY
) -> Image:
    """Load one image from anything a door may hand over.

    Accepted: an :class:`Image` (passed through after the pixel check); ``bytes``,
    ``bytearray`` and ``memoryview`` of an encoded image; a ``data:`` URL; an ``http(s)`` URL
    (only with ``policy.allow_remote_images``); a ``pathlib.Path``/``os.PathLike``, a plain path
    string or a ``file:`` URL (only with ``policy.allow_local_paths``); a Pillow image; a numpy
    array of ``uint8`` shaped H x W, H x W x 1, H x W x 3 or H x W x 4; a matplotlib figure
    (anything with ``savefig``, rendered to PNG); a binary file object.

    Args:
        obj: The image.
        limits: Size, pixel and format limits.
        policy: What may be read (:data:`HTTP_POLICY` unless given).

    Returns:
        The checked image.

    Raises:
        InvalidRequestError: Bad data, a limit exceeded, or something the policy forbids
            (``WrongTypeError`` for an object that is no image at all).
        DependencyError: Pillow is not installed.
    """
    _require_pillow()
    return _load(obj, limits, policy, "the image")


def load_images(
    images: object, *, limits: ImageLimits = DEFAULT_LIMITS, policy: ImagePolicy = HTTP_POLICY
) -> list[Image]:
    """Load the ``images=`` argument of a helper API: one image, a list or tuple, or None.

    Args:
        images: One image (anything :func:`load_image` takes), a list/tuple of them, or None.
        limits: Limits; ``max_images`` is checked before anything is loaded.
        policy: What may be read (Python APIs pass :data:`PYTHON_POLICY`).

    Returns:
        The images, in order.

    Raises:
        InvalidRequestError: Too many images, or one that :func:`load_image` refuses
            (the message names which: ``images[2]: ...``).
    """
    if images is None:
        return []
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    _check_count(len(items), limits)
    _require_pillow()
    return [_located(item, limits, policy, f"images[{index}]") for index, item in enumerate(items)]


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
    _check_count(len(found), limits)
    if not found:
        return [dict(message) for message in messages], []
    _require_pillow()
    images = [
        _located(source, limits, policy, f"messages[{index}].content[{position}]")
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


def _check_count(count: int, limits: ImageLimits) -> None:
    if count > limits.max_images:
        raise InvalidRequestError(
            f"{count} images in one request; the limit is max_images={limits.max_images}"
        )


def _located(obj: object, limits: ImageLimits, policy: ImagePolicy, where: str) -> Image:
    try:
        return _load(obj, limits, policy, "the image")
    except InvalidRequestError as error:
        raise type(error)(f"{where}: {error}") from error


def _load(obj: object, limits: ImageLimits, policy: ImagePolicy, what: str) -> Image:
    if isinstance(obj, Image):
        _check_pixels(obj.width, obj.height, limits, what)
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _from_encoded(bytes(obj), limits, what)
    if isinstance(obj, str):
        return _from_string(obj, limits, policy)
    if isinstance(obj, os.PathLike):
        return _from_path(Path(os.fsdecode(obj)), limits, policy)
    if _is_pil_image(obj):
        return _from_pil(obj, limits, what)
    if hasattr(obj, "__array_interface__") and hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return _from_array(obj, limits, what)
    if callable(getattr(obj, "savefig", None)):
        return _from_figure(obj, limits, what)
    if callable(getattr(obj, "read", None)):
        return _from_file_object(obj, limits, what)
    raise WrongTypeError(
        f"{what} is a {type(obj).__name__}; expected a data: URL, bytes, a Pillow image, "
        "a numpy uint8 array, a matplotlib figure or a pathlib.Path"
    )


def _from_string(text: str, limits: ImageLimits, policy: ImagePolicy) -> Image:
    url = text.strip()
    if not url:
        raise InvalidRequestError("the image URL is empty")
    match = _URL_SCHEME.match(url)
    scheme = match.group(1).lower() if match else None
    if scheme == "data":
        return _from_encoded(_decode_data_url(url, limits), limits, "the data: URL image")
    if scheme in ("http", "https"):
        if not policy.allow_remote_images:
            raise InvalidRequestError(
                f"remote image URLs are turned off ({_shown(url)}); send the image as a data: "
                "URL, or turn on allow_remote_images"
            )
        body = fetch_remote(url, limits=limits, is_allowed_address=policy.is_allowed_address)
        return _from_encoded(body, limits, f"the image from {urlsplit(url).hostname}")
    if scheme is None or scheme == "file" or not url.partition(":")[2].startswith("//"):
        if not policy.allow_local_paths:
            raise _no_local_files(url)
        return _from_path(_file_url_path(url) if scheme == "file" else Path(url), limits, policy)
    raise InvalidRequestError(
        f"image URLs must be data: URLs (or http(s): when allowed), not {scheme}: ({_shown(url)})"
    )


def _no_local_files(shown: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"local files are never read under this policy ({_shown(shown)}): paths and file: URLs "
        "are refused (allow_local_paths=False, as for every request over HTTP); send the image "
        "as a data: URL"
    )


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidRequestError(f"file: URLs must name this machine, not {parts.netloc!r}")
    return Path(url2pathname(parts.path))


def _decode_data_url(url: str, limits: ImageLimits) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise InvalidRequestError("the data: URL has no ',' before its data")
    parameters = [item.strip().lower() for item in header[len("data:") :].split(";")]
    if "base64" not in parameters[1:]:
        raw = unquote_to_bytes(payload)
        _check_bytes(len(raw), limits, "the data: URL image")
        return raw
    compact = "".join(payload.split())
    _check_bytes(len(compact) * 3 // 4 - compact[-2:].count("="), limits, "the data: URL image")
    compact = compact.replace("-", "+").replace("_", "/")  # the URL-safe alphabet too
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidRequestError(f"the data: URL is not valid base64: {error}") from error


def _from_path(path: Path, limits: ImageLimits, policy: ImagePolicy) -> Image:
    if not policy.allow_local_paths:
        raise _no_local_files(str(path))
    path = path.expanduser()
    what = f"image file {path}"
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise InvalidRequestError(f"{what} is not a regular file")
        _check_bytes(status.st_size, limits, what)
        with path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)
    except FileNotFoundError as error:
        raise InvalidRequestError(f"no image file at {path}") from error
    except OSError as error:
        raise InvalidRequestError(f"cannot read {what}: {error.strerror or error}") from error
    return _from_encoded(data, limits, what)


def _from_file_object(handle: Any, limits: ImageLimits, what: str) -> Image:
    data = handle.read(limits.max_bytes + 1)
    if not isinstance(data, (bytes, bytearray)):
        raise WrongTypeError(f"{what} is a file object opened in text mode; open it with 'rb'")
    return _from_encoded(bytes(data), limits, what)


def _from_encoded(data: bytes, limits: ImageLimits, what: str) -> Image:
    """Check and open encoded bytes: size, header (format, pixels), then one full decode."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    _check_bytes(len(data), limits, what)
    try:
        opened = PILImage.open(io.BytesIO(data), formats=sorted(SUPPORTED_FORMATS))
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as error:
        raise InvalidRequestError(
            f"{what} is too many pixels ({error}); the limit is max_pixels={limits.max_pixels:,}"
        ) from error
    except UnidentifiedImageError as error:
        raise InvalidRequestError(
            f"{what} is not an image in a supported format ({_listed(limits.formats)})"
            f"{_sniffed(data)}"
        ) from error
    with opened:
        source_format = _FORMAT_ALIASES.get(str(opened.format), str(opened.format))
        if source_format not in limits.formats:
            raise InvalidRequestError(
                f"{what} is {source_format}; accepted formats: {_listed(limits.formats)}"
            )
        _check_pixels(opened.width, opened.height, limits, what)
        try:
            opened.load()  # the first frame only; a truncated or corrupt file fails here
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise InvalidRequestError(f"{what} is corrupt or truncated: {error}") from error
        if source_format == "GIF" or getattr(opened, "is_animated", False):
            upright = ImageOps.exif_transpose(opened)
            return Image(_encode_png(upright), "PNG", upright.width, upright.height)
        width, height = opened.size
        if opened.getexif().get(_ORIENTATION) in _QUARTER_TURNS:
            width, height = height, width
    return Image(data, source_format, width, height)


def _from_pil(image: PILImage.Image, limits: ImageLimits, what: str) -> Image:
    from PIL import ImageOps

    _check_pixels(image.width, image.height, limits, what)
    try:
        upright = ImageOps.exif_transpose(image)  # a copy: the caller's image is left alone
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise InvalidRequestError(f"{what} cannot be read: {error}") from error
    return Image(_encode_png(upright), "PNG", upright.width, upright.height)


def _from_array(array: Any, limits: ImageLimits, what: str) -> Image:
    from PIL import Image as PILImage

    shape = tuple(int(size) for size in array.shape)
    if str(array.dtype) != "uint8":
        raise InvalidRequestError(
            f"{what} is an array of {array.dtype}; images must be uint8 "
            "(for floats in [0, 1]: (array * 255).round().astype('uint8'))"
        )
    if len(shape) == 3 and shape[2] == 1:
        array, shape = array[:, :, 0], shape[:2]
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4))):
        raise InvalidRequestError(
            f"{what} is an array of shape {shape}; expected H x W (grayscale), "
            "H x W x 3 (RGB) or H x W x 4 (RGBA)"
        )
    _check_pixels(shape[1], shape[0], limits, what)
    return _from_pil(PILImage.fromarray(array), limits, what)


def _from_figure(figure: Any, limits: ImageLimits, what: str) -> Image:
    size = getattr(figure, "get_size_inches", None)
    dpi = getattr(figure, "dpi", None)
    if callable(size) and isinstance(dpi, (int, float)):
        inches = size()
        _check_pixels(round(inches[0] * dpi), round(inches[1] * dpi), limits, what)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return _from_encoded(buffer.getvalue(), limits, what)


def _is_pil_image(obj: object) -> TypeGuard[PILImage.Image]:
    module = sys.modules.get("PIL.Image")  # a Pillow image means Pillow is already imported
    return module is not None and isinstance(obj, module.Image)


def _encode_png(image: PILImage.Image) -> bytes:
    if image.mode not in _PNG_MODES:
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _flatten(image: PILImage.Image) -> PILImage.Image:
    from PIL import Image as PILImage

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _jpeg_data_url(image: PILImage.Image, quality: int) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _check_bytes(size: int, limits: ImageLimits, what: str) -> None:
    if size > limits.max_bytes:
        raise InvalidRequestError(
            f"{what} is {size:,} bytes; the limit is max_bytes={limits.max_bytes:,}"
        )


def _check_pixels(width: int, height: int, limits: ImageLimits, what: str) -> None:
    if width < 1 or height < 1:
        raise InvalidRequestError(f"{what} is empty ({width}x{height} pixels)")
    if width * height > limits.max_pixels:
        raise InvalidRequestError(
            f"{what} is {width}x{height} = {width * height:,} pixels; "
            f"the limit is max_pixels={limits.max_pixels:,}"
        )


def _require_pillow() -> None:
    try:
        import PIL.Image  # noqa: F401
    except ImportError as error:
        raise DependencyError("images need Pillow: pip install pillow") from error


def _listed(names: frozenset[str]) -> str:
    return ", ".join(sorted(names))


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def _sniffed(data: bytes) -> str:
    head = data[:64].lstrip()
    for magic, name in _SNIFFED:
        if head.startswith(magic):
            return f"; it looks like {name}"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "; it looks like HEIC/AVIF"
    return ""


# -- remote fetching ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One hop of a fetch: where to connect and what to ask for."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, no brackets
    port: int
    path: str  # path and query


def fetch_remote(
    url: str,
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    is_allowed_address: AddressCheck = is_public_address,
) -> bytes:
    """Download an image over ``http(s)``, refusing anything but public addresses.

    Each hop resolves the host first, refuses it if *any* of its addresses fails
    ``is_allowed_address``, and connects to a checked address itself (the Host header and the
    TLS server name still carry the host name, and the certificate is verified against it), so
    a second DNS answer cannot swap in another address. Redirects (at most
    ``limits.max_redirects``) are checked the same way and may only lead to ``http(s)``. The
    answer must be ``200`` with an ``image/*`` Content-Type and no content encoding; the body is
    read in chunks and refused as soon as it passes ``limits.max_bytes``; the whole fetch must
    finish within ``limits.fetch_timeout`` seconds (name resolution excepted: the system
    resolver keeps its own timeout). Proxy settings are ignored (a proxy would undo the pinning).
    The bytes are not decoded here (:func:`load_image` does that).

    Args:
        url: An ``http://`` or ``https://`` URL.
        limits: ``max_bytes``, ``fetch_timeout`` and ``max_redirects`` apply.
        is_allowed_address: The address check (:func:`is_public_address`).

    Returns:
        The body.

    Raises:
        InvalidRequestError: A refused address or scheme, a failed or slow fetch, a wrong
            status or Content-Type, too many redirects, or a body over the size limit.
    """
    deadline = time.monotonic() + limits.fetch_timeout
    current = url
    for _ in range(limits.max_redirects + 1):
        target = _parse_target(current)
        addresses = _resolve(target, is_allowed_address)
        location, body = _fetch_once(target, addresses, limits, deadline)
        if location is None:
            return body
        current = urljoin(current, location)
    raise InvalidRequestError(
        f"the image URL redirects more than max_redirects={limits.max_redirects} times"
    )


def _parse_target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidRequestError(f"the image URL is malformed: {error}") from error
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequestError(
            f"remote images are fetched over http and https only, not {scheme or 'relative'}: "
            f"({_shown(url)})"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError("image URLs with credentials (user@host) are not accepted")
    host = parts.hostname
    if not host:
        raise InvalidRequestError(f"the image URL has no host ({_shown(url)})")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise InvalidRequestError(f"the image host {host!r} is not a valid name") from error
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = http.client.HTTPS_PORT if scheme == "https" else http.client.HTTP_PORT
    return _Target(scheme, host, port or default, path)


def _resolve(target: _Target, is_allowed_address: AddressCheck) -> list[IPAddress]:
    try:
        answers = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise InvalidRequestError(
            f"cannot resolve the image host {target.host}: {error}"
        ) from error
    addresses: list[IPAddress] = []
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]))
        if not is_allowed_address(address):
            raise InvalidRequestError(
                f"the image host {target.host} resolves to {address}, which is not a public "
                "address; remote images are fetched only from public addresses"
            )
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InvalidRequestError(f"the image host {target.host} has no address")
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to one checked address; the Host header still names the host."""

    def __init__(self, host: str, port: int, *, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        """Connect to the checked address, never to a fresh lookup of the host name."""
        self.sock = socket.create_connection((str(self.address), self.port), self.timeout)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """TLS to one checked address, with the host name as server name and certificate check."""

    default_port = http.client.HTTPS_PORT

    def __init__(self, host: str, port: int, *, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, address=address, timeout=timeout)
        self.context = ssl.create_default_context()

    def connect(self) -> None:
        """Connect to the checked address, then TLS with SNI and verification for the host."""
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


def _fetch_once(
    target: _Target, addresses: list[IPAddress], limits: ImageLimits, deadline: float
) -> tuple[str | None, bytes]:
    """One GET: ``(Location, b"")`` for a redirect, ``(None, body)`` for the image."""
    kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    failure: OSError | None = None
    for address in addresses:
        connection = kind(
            target.host, target.port, address=address, timeout=_remaining(target, limits, deadline)
        )
        try:
            try:
                connection.connect()
            except TimeoutError:
                raise
            except OSError as error:
                failure = error
                continue
            return _exchange(connection, target, limits, deadline)
        except TimeoutError as error:
            raise _timeout(target, limits) from error
        except (OSError, http.client.HTTPException) as error:
            raise InvalidRequestError(
                f"fetching the image from {target.host} failed: {error}"
            ) from error
        finally:
            connection.close()
    raise InvalidRequestError(f"cannot connect to the image host {target.host}: {failure}")


def _exchange(
    connection: _PinnedHTTPConnection, target: _Target, limits: ImageLimits, deadline: float
) -> tuple[str | None, bytes]:
    headers = {
        "Accept": "image/*",
        "Accept-Encoding": "identity",
        "User-Agent": "mlxnb",
        "Connection": "close",
    }
    connection.request("GET", target.path, headers=headers)
    sock = connection.sock  # getresponse() drops it from the connection when the server closes
    sock.settimeout(_remaining(target, limits, deadline))
    response = connection.getresponse()
    if response.status in _REDIRECTS:
        location = response.getheader("Location")
        if not location:
            raise InvalidRequestError(f"the image host {target.host} redirects without a Location")
        return location, b""
    if response.status != 200:
        raise InvalidRequestError(
            f"the image host {target.host} answered HTTP {response.status} {response.reason}"
        )
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        raise InvalidRequestError(
            f"the image host {target.host} sent Content-Type {content_type or 'none'!r}, "
            "not an image/* type"
        )
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise InvalidRequestError(f"the image host {target.host} sent {encoding}-encoded data")
    declared = response.getheader("Content-Length") or ""
    if declared.isdigit():
        _check_bytes(int(declared), limits, f"the image from {target.host}")
    return None, _read_capped(sock, response, target, limits, deadline)


def _read_capped(
    sock: socket.socket,
    response: http.client.HTTPResponse,
    target: _Target,
    limits: ImageLimits,
    deadline: float,
) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while not response.isclosed():  # it closes itself (and the socket) after the last byte
        sock.settimeout(_remaining(target, limits, deadline))
        chunk = response.read(min(_CHUNK, limits.max_bytes + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_bytes:
            raise InvalidRequestError(
                f"the image from {target.host} is over {limits.max_bytes:,} bytes; "
                f"the limit is max_bytes={limits.max_bytes:,}"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _remaining(target: _Target, limits: ImageLimits, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timeout(target, limits)
    return left


def _timeout(target: _Target, limits: ImageLimits) -> InvalidRequestError:
    return InvalidRequestError(
        f"fetching the image from {target.host} took longer than "
        f"fetch_timeout={limits.fetch_timeout} s"
    )


def no_vision_error(model_id: str, count: int) -> InvalidRequestError:
    """The refusal for images sent to a text-only model (the same words in every door)."""
    return InvalidRequestError(
        f"{model_id} is a text-only model: it cannot see images ({count} sent). Load a vision "
        "model (for example 'mlx-community/Qwen2.5-VL-3B-Instruct-4bit') or leave the images out."
    )
