"""What one request may bring and read: image limits, policies, and the address guard.

:class:`ImageLimits` bounds how much image a request may bring (count, bytes, pixels, formats,
fetch time); :class:`ImagePolicy` decides what may be read on its behalf: :data:`HTTP_POLICY`
(the default everywhere) never reads a local file and never fetches a URL; :data:`PYTHON_POLICY`
reads paths, since a Python caller already has the run of the machine. Remote fetches go only to
addresses that :func:`is_public_address` (or a policy's own check) accepts. The small checks
against the limits (:func:`check_count`, :func:`check_bytes`, :func:`check_pixels`) live here
too, so every loader refuses with the same words.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mlxnb.errors import InvalidRequestError

__all__ = [
    "DEFAULT_LIMITS",
    "HTTP_POLICY",
    "PYTHON_POLICY",
    "SUPPORTED_FORMATS",
    "AddressCheck",
    "IPAddress",
    "ImageLimits",
    "ImagePolicy",
    "check_bytes",
    "check_count",
    "check_pixels",
    "is_public_address",
    "listed",
    "shown",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IP address, either family."""

AddressCheck = Callable[[IPAddress], bool]
"""Decides whether a remote image may be fetched from an address (True: it may)."""

SUPPORTED_FORMATS: Final = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})
"""The encodings an image may arrive in (Pillow's format names); GIFs give their first frame."""

_SHOWN_CHARS: Final = 60


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
                f"ImageLimits.formats must be a non-empty subset of {listed(SUPPORTED_FORMATS)}: "
                f"{listed(unknown) if unknown else 'empty'}"
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


# -- checks against the limits -----------------------------------------------------------------


def check_count(count: int, limits: ImageLimits) -> None:
    """Refuse more than ``limits.max_images`` images in one request."""
    if count > limits.max_images:
        raise InvalidRequestError(
            f"{count} images in one request; the limit is max_images={limits.max_images}"
        )


def check_bytes(size: int, limits: ImageLimits, what: str) -> None:
    """Refuse an encoded image (``what``) of more than ``limits.max_bytes`` bytes."""
    if size > limits.max_bytes:
        raise InvalidRequestError(
            f"{what} is {size:,} bytes; the limit is max_bytes={limits.max_bytes:,}"
        )


def check_pixels(width: int, height: int, limits: ImageLimits, what: str) -> None:
    """Refuse an empty image (``what``) or one of more than ``limits.max_pixels`` pixels."""
    if width < 1 or height < 1:
        raise InvalidRequestError(f"{what} is empty ({width}x{height} pixels)")
    if width * height > limits.max_pixels:
        raise InvalidRequestError(
            f"{what} is {width}x{height} = {width * height:,} pixels; "
            f"the limit is max_pixels={limits.max_pixels:,}"
        )


def listed(names: frozenset[str]) -> str:
    """Names for a refusal: sorted, comma-separated."""
    return ", ".join(sorted(names))


def shown(text: str) -> str:
    """A URL or path for a refusal: quoted, cut after a few dozen characters."""
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")
