"""Loading: every kind of image input brought to one checked, hashed :class:`Image`.

Python code hands over notebook objects (Pillow images, numpy arrays, matplotlib figures, paths,
file objects, raw bytes), every door data URLs, and ``http(s)`` URLs when the user turns them
on. :func:`load_image` turns any of them into one :class:`~mlxnb._images.value.Image`, checked
against :class:`~mlxnb._images.policy.ImageLimits` and read only as the caller's
:class:`~mlxnb._images.policy.ImagePolicy` allows (remote URLs through
:func:`~mlxnb._images.remote.fetch_remote`); :func:`load_images` loads a helper API's
``images=`` argument. Pillow is imported on first use.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeGuard
from urllib.parse import unquote_to_bytes, urlsplit
from urllib.request import url2pathname

from mlxnb._images.policy import (
    DEFAULT_LIMITS,
    HTTP_POLICY,
    SUPPORTED_FORMATS,
    ImageLimits,
    ImagePolicy,
    check_bytes,
    check_count,
    check_pixels,
    listed,
    shown,
)
from mlxnb._images.remote import fetch_remote
from mlxnb._images.value import Image, require_pillow
from mlxnb.errors import InvalidRequestError, WrongTypeError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["load_image", "load_images", "load_located"]

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
_PNG_COMPRESS_LEVEL: Final = 1  # fast: the PNG only carries pixels to the model, never stored


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
    require_pillow()
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
    check_count(len(items), limits)
    require_pillow()
    return [
        load_located(item, limits, policy, f"images[{index}]") for index, item in enumerate(items)
    ]


def load_located(obj: object, limits: ImageLimits, policy: ImagePolicy, where: str) -> Image:
    """Load one image (Pillow already checked), naming ``where`` it stood in any refusal."""
    try:
        return _load(obj, limits, policy, "the image")
    except InvalidRequestError as error:
        raise type(error)(f"{where}: {error}") from error


def _load(obj: object, limits: ImageLimits, policy: ImagePolicy, what: str) -> Image:
    if isinstance(obj, Image):
        check_pixels(obj.width, obj.height, limits, what)
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
                f"remote image URLs are turned off ({shown(url)}); send the image as a data: "
                "URL, or turn on allow_remote_images"
            )
        body = fetch_remote(url, limits=limits, is_allowed_address=policy.is_allowed_address)
        return _from_encoded(body, limits, f"the image from {urlsplit(url).hostname}")
    if scheme is None or scheme == "file" or not url.partition(":")[2].startswith("//"):
        if not policy.allow_local_paths:
            raise _no_local_files(url)
        return _from_path(_file_url_path(url) if scheme == "file" else Path(url), limits, policy)
    raise InvalidRequestError(
        f"image URLs must be data: URLs (or http(s): when allowed), not {scheme}: ({shown(url)})"
    )


def _no_local_files(source: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"local files are never read under this policy ({shown(source)}): paths and file: URLs "
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
        check_bytes(len(raw), limits, "the data: URL image")
        return raw
    compact = "".join(payload.split())
    check_bytes(len(compact) * 3 // 4 - compact[-2:].count("="), limits, "the data: URL image")
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
        check_bytes(status.st_size, limits, what)
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

    check_bytes(len(data), limits, what)
    try:
        opened = PILImage.open(io.BytesIO(data), formats=sorted(SUPPORTED_FORMATS))
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as error:
        raise InvalidRequestError(
            f"{what} is too many pixels ({error}); the limit is max_pixels={limits.max_pixels:,}"
        ) from error
    except UnidentifiedImageError as error:
        raise InvalidRequestError(
            f"{what} is not an image in a supported format ({listed(limits.formats)})"
            f"{_sniffed(data)}"
        ) from error
    with opened:
        source_format = _FORMAT_ALIASES.get(str(opened.format), str(opened.format))
        if source_format not in limits.formats:
            raise InvalidRequestError(
                f"{what} is {source_format}; accepted formats: {listed(limits.formats)}"
            )
        check_pixels(opened.width, opened.height, limits, what)
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

    check_pixels(image.width, image.height, limits, what)
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
    check_pixels(shape[1], shape[0], limits, what)
    return _from_pil(PILImage.fromarray(array), limits, what)


def _from_figure(figure: Any, limits: ImageLimits, what: str) -> Image:
    size = getattr(figure, "get_size_inches", None)
    dpi = getattr(figure, "dpi", None)
    if callable(size) and isinstance(dpi, (int, float)):
        inches = size()
        check_pixels(round(inches[0] * dpi), round(inches[1] * dpi), limits, what)
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


def _sniffed(data: bytes) -> str:
    head = data[:64].lstrip()
    for magic, name in _SNIFFED:
        if head.startswith(magic):
            return f"; it looks like {name}"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "; it looks like HEIC/AVIF"
    return ""
