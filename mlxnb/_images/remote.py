"""Remote images: ``http(s)`` downloads pinned to checked, public addresses.

:func:`fetch_remote` resolves each hop's host, refuses it unless every address passes the
policy's address check (:func:`~mlxnb._images.policy.is_public_address` by default), and
connects to a checked address itself (:class:`_PinnedHTTPConnection`,
:class:`_PinnedHTTPSConnection`), so a second DNS answer cannot swap in another address. Sizes,
redirects and time are bounded by :class:`~mlxnb._images.policy.ImageLimits`; the bytes are not
decoded here.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit

from mlxnb._images.policy import (
    DEFAULT_LIMITS,
    AddressCheck,
    ImageLimits,
    IPAddress,
    check_bytes,
    is_public_address,
    shown,
)
from mlxnb.errors import InvalidRequestError

__all__ = ["fetch_remote"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024


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
            f"({shown(url)})"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError("image URLs with credentials (user@host) are not accepted")
    host = parts.hostname
    if not host:
        raise InvalidRequestError(f"the image URL has no host ({shown(url)})")
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
        check_bytes(int(declared), limits, f"the image from {target.host}")
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
