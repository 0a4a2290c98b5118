"""The checked image value: encoded bytes, size and hash, decoded with Pillow on demand.

An :class:`Image` is what every loader produces and what the engine, the audit log and the
widget consume: the bytes a vision model gets, their SHA-256 for the audit row, upright Pillow
decodes (:meth:`Image.to_pil`, :meth:`Image.to_rgb`), data URLs, and small JPEG thumbnails for
transcripts. Pillow is imported on first use, so importing the module costs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from mlxnb.errors import DependencyError, InvalidRequestError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["Image", "require_pillow"]

_MIME_TYPES: Final = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}


@dataclass(frozen=True)
class Image:
    """One checked image, ready for a vision model.

    ``data`` is the original encoded bytes when the image arrived encoded in a supported,
    single-frame format (PNG, JPEG, WEBP, BMP): nothing is re-encoded, JPEGs lose nothing more,
    and ``sha256`` equals ``sha256sum`` of the file that was sent. GIFs, animated images and
    in-memory objects (Pillow images, arrays, figures) are encoded as PNG (the first frame).
    EXIF orientation is honoured: ``width``/``height`` and :meth:`to_pil` are upright.

    Build images with :func:`~mlxnb._images.load.load_image`; the constructor checks nothing.

    Attributes:
        data: The encoded image (see above).
        format: Its encoding, a key of :data:`~mlxnb._images.policy.SUPPORTED_FORMATS`
            (never GIF).
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
        require_pillow()
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
        require_pillow()
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


def _flatten(image: PILImage.Image) -> PILImage.Image:
    from PIL import Image as PILImage

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def require_pillow() -> None:
    """Raise :class:`~mlxnb.errors.DependencyError` unless Pillow can be imported."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError as error:
        raise DependencyError("images need Pillow: pip install pillow") from error


def _jpeg_data_url(image: PILImage.Image, quality: int) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
