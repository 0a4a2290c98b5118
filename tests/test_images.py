"""Image inputs: every kind to one checked value, the limits, the policies and the SSRF guard.

Real Pillow images, numpy arrays, files and a real ``http.server`` on 127.0.0.1; nothing of
``mlxnb._images`` is mocked. The fetching tests that must get through the guard pass a
permissive address check (the guard itself refuses the local server, as tested separately).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import io
import ipaddress
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from mlxnb._images import (
    HTTP_POLICY,
    PYTHON_POLICY,
    ImageLimits,
    ImagePolicy,
    IPAddress,
    fetch_remote,
    is_public_address,
    load_image,
    load_images,
    split_content,
    user_message,
)
from mlxnb.errors import InvalidRequestError, WrongTypeError

# -- helpers -----------------------------------------------------------------------------------


def gradient(width: int = 40, height: int = 24, mode: str = "RGB") -> PILImage.Image:
    """A small image whose pixels all differ a little (so mix-ups show)."""
    array = np.zeros((height, width, 4), dtype=np.uint8)
    array[..., 0] = np.arange(width, dtype=np.uint8)[None, :] * 5
    array[..., 1] = np.arange(height, dtype=np.uint8)[:, None] * 9
    array[..., 2] = 200
    array[..., 3] = 255 - np.arange(width, dtype=np.uint8)[None, :] * 3
    return PILImage.fromarray(array).convert(mode)


def encode(image: PILImage.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def pixels(image: PILImage.Image) -> np.ndarray:
    return np.asarray(image)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries no pixel data: tiny on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


PNG = encode(gradient(), "PNG")


def allow_all(address: IPAddress) -> bool:
    return True


# -- every input kind round-trips --------------------------------------------------------------


def test_pil_image_round_trips() -> None:
    source = gradient()
    image = load_image(source, policy=PYTHON_POLICY)
    assert (image.format, image.width, image.height) == ("PNG", 40, 24)
    assert np.array_equal(pixels(image.to_pil()), pixels(source))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_numpy_arrays_round_trip(mode: str) -> None:
    array = pixels(gradient(mode=mode))
    image = load_image(array, policy=PYTHON_POLICY)
    assert image.to_pil().mode == mode
    assert np.array_equal(pixels(image.to_pil()), array)


def test_numpy_single_channel_is_grayscale() -> None:
    array = pixels(gradient(mode="L"))
    image = load_image(array[:, :, None])
    assert np.array_equal(pixels(image.to_pil()), array)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), "uint8"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
    ],
)
def test_bad_arrays_are_refused(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        load_image(array)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("JPEG", {"quality": 90}), ("WEBP", {"lossless": True}), ("BMP", {})],
)
def test_encoded_bytes_and_data_urls_keep_their_bytes(fmt: str, options: dict[str, Any]) -> None:
    data = encode(gradient(), fmt, **options)
    expected = pixels(PILImage.open(io.BytesIO(data)))
    for source in (data, bytearray(data), memoryview(data), data_url(data)):
        image = load_image(source)
        assert image.data == data  # kept as sent, not re-encoded
        assert image.format == fmt
        assert np.array_equal(pixels(image.to_pil()), expected)


def test_gif_gives_its_first_frame_as_png() -> None:
    first, second = gradient(mode="P"), gradient(mode="RGB").rotate(180).convert("P")
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second], duration=100)
    image = load_image(buffer.getvalue())
    assert image.format == "PNG"
    expected = pixels(PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert np.array_equal(pixels(image.to_pil().convert("RGB")), expected)


def test_path_and_file_url_round_trip_for_python_callers(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    for source in (path, str(path), path.as_uri()):
        image = load_image(source, policy=PYTHON_POLICY)
        assert image.data == PNG
        assert image.sha256 == hashlib.sha256(PNG).hexdigest()


def test_file_objects_are_read() -> None:
    image = load_image(io.BytesIO(PNG))
    assert image.data == PNG
    with pytest.raises(WrongTypeError, match="'rb'"):
        load_image(io.StringIO("not bytes"))


class PNGFigure:
    """Anything with ``savefig`` is rendered like a matplotlib figure (a real object)."""

    def __init__(self, picture: PILImage.Image) -> None:
        self.picture = picture

    def savefig(self, target: io.BytesIO, format: str) -> None:
        self.picture.save(target, format=format.upper())


def test_figure_like_objects_render_to_png() -> None:
    source = gradient()
    image = load_image(PNGFigure(source))
    assert image.format == "PNG"
    assert np.array_equal(pixels(image.to_pil()), pixels(source))


def test_matplotlib_figure_renders_to_png() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure manager

    figure = Figure(figsize=(2, 1), dpi=50)
    figure.add_subplot().plot([0, 1], [1, 0])
    image = load_image(figure)
    assert (image.format, image.width, image.height) == ("PNG", 100, 50)


def test_image_values_pass_through() -> None:
    image = load_image(PNG)
    assert load_image(image) is image


def test_exif_orientation_is_honoured() -> None:
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    data = encode(gradient(40, 20), "JPEG", exif=exif)
    image = load_image(data)
    assert image.data == data
    assert (image.width, image.height) == (20, 40)
    assert image.to_pil().size == (20, 40)
    assert load_image(PILImage.open(io.BytesIO(data))).to_pil().size == (20, 40)


def test_objects_that_are_no_image_are_a_wrong_type() -> None:
    with pytest.raises(WrongTypeError, match="dict"):
        load_image({"not": "an image"})


# -- bad data ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png;base64,!!!not base64!!!", "base64"),
        ("data:image/png;base64,A", "base64"),
        ("data:image/png;base64", "','"),
        (data_url(b"just some text, no image"), "not an image in a supported format"),
        (data_url(b"II*\x00" + b"\x00" * 40, "image/tiff"), "looks like TIFF"),
        (data_url(encode(gradient(), "TIFF"), "image/tiff"), "supported format"),
        (data_url(PNG[:60]), "corrupt or truncated"),
        ("", "empty"),
    ],
)
def test_bad_data_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        load_image(url)


def test_unpadded_and_urlsafe_base64_is_accepted() -> None:
    jpeg = encode(gradient(), "JPEG")
    urlsafe = base64.urlsafe_b64encode(jpeg).decode().rstrip("=")
    wrapped = "\n".join(urlsafe[i : i + 76] for i in range(0, len(urlsafe), 76))
    assert load_image(f"data:image/jpeg;base64,{wrapped}").data == jpeg


def test_formats_can_be_narrowed() -> None:
    limits = ImageLimits(formats=frozenset({"png"}))
    assert load_image(PNG, limits=limits).format == "PNG"
    with pytest.raises(InvalidRequestError, match="JPEG; accepted formats: PNG"):
        load_image(encode(gradient(), "JPEG"), limits=limits)


def test_limits_are_validated() -> None:
    with pytest.raises(InvalidRequestError, match="max_images"):
        ImageLimits(max_images=0)
    with pytest.raises(InvalidRequestError, match="TIFF"):
        ImageLimits(formats=frozenset({"TIFF"}))


# -- limits ------------------------------------------------------------------------------------


def test_oversize_bytes_are_refused_before_decoding(tmp_path: Path) -> None:
    limits = ImageLimits(max_bytes=1000)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = encode(PILImage.fromarray(noise), "PNG")
    assert len(big) > 1000
    path = tmp_path / "big.png"
    path.write_bytes(big)
    for source in (big, data_url(big), path):
        with pytest.raises(InvalidRequestError, match=r"max_bytes=1,000"):
            load_image(source, limits=limits, policy=PYTHON_POLICY)
    # refused from the length alone: this payload is not even valid base64
    with pytest.raises(InvalidRequestError, match=r"max_bytes=1,000"):
        load_image("data:image/png;base64," + "!" * 4000, limits=limits)


def test_pixel_bomb_is_refused_from_its_header() -> None:
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    with pytest.raises(InvalidRequestError, match=r"max_pixels=40,000,000"):
        load_image(data_url(bomb))


def test_pixels_over_the_limit_are_refused_without_decoding() -> None:
    # 9000x6000 is over the 40 MP default but under Pillow's own bomb check; the IDAT is empty,
    # so decoding would fail with "truncated": the pixel limit must speak first.
    with pytest.raises(InvalidRequestError, match=r"9000x6000 = 54,000,000 pixels.*40,000,000"):
        load_image(png_header_only(9000, 6000))
    with pytest.raises(InvalidRequestError, match=r"max_pixels=100\b"):
        load_image(gradient(), limits=ImageLimits(max_pixels=100))
    with pytest.raises(InvalidRequestError, match=r"max_pixels=100\b"):
        load_image(np.zeros((20, 20), dtype=np.uint8), limits=ImageLimits(max_pixels=100))


def test_too_many_images_are_refused_before_any_is_loaded() -> None:
    limits = ImageLimits(max_images=2)
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(PNG)}}]},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(PNG)}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}},
            ],
        },
    ]
    with pytest.raises(InvalidRequestError, match=r"3 images in one request; .*max_images=2"):
        split_content(messages, limits=limits)
    with pytest.raises(InvalidRequestError, match="max_images=2"):
        load_images([PNG, PNG, PNG], limits=limits)


# -- splitting messages ------------------------------------------------------------------------


def test_split_content_replaces_image_parts_in_order() -> None:
    jpeg = encode(gradient(), "JPEG")
    array = pixels(gradient(mode="L"))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "plain"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare "},
                {"type": "image_url", "image_url": {"url": data_url(PNG), "detail": "low"}},
                {"type": "image_url", "image_url": data_url(jpeg, "image/jpeg")},
                {"type": "text", "text": " with "},
                {"type": "input_image", "image_url": data_url(PNG)},
                {"type": "image", "image": array},
            ],
        },
    ]
    before = repr(messages)
    split, images = split_content(messages, policy=PYTHON_POLICY)
    assert repr(messages) == before  # the input is left alone
    assert split[:2] == messages[:2]
    assert split[2]["content"] == [
        {"type": "text", "text": "Compare "},
        {"type": "image"},
        {"type": "image"},
        {"type": "text", "text": " with "},
        {"type": "image"},
        {"type": "image"},
    ]
    assert [image.format for image in images] == ["PNG", "JPEG", "PNG", "PNG"]
    assert images[0].data == PNG and images[1].data == jpeg
    assert np.array_equal(pixels(images[3].to_pil()), array)


def test_text_only_messages_pass_through() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]
    split, images = split_content(messages)
    assert split == messages and images == []


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"type": "image_url"}, r"messages\[0\]\.content\[0\]: an 'image_url' part needs"),
        ({"type": "image_url", "image_url": {"url": ""}}, "needs 'image_url'"),
        ({"type": "input_image", "file_id": "file-123"}, "file_id"),
        ({"type": "image"}, "needs an 'image'"),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}},
            r"messages\[0\]\.content\[0\]: the data: URL is not valid base64",
        ),
    ],
)
def test_malformed_image_parts_are_refused(part: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        split_content([{"role": "user", "content": [part]}])


def test_user_message_and_load_images_for_helper_apis() -> None:
    message = user_message("What is this?", [gradient(), PNG])
    split, images = split_content([message], policy=PYTHON_POLICY)
    assert split[0]["content"] == [
        {"type": "image"},
        {"type": "image"},
        {"type": "text", "text": "What is this?"},
    ]
    assert len(images) == 2
    assert user_message("hi") == {"role": "user", "content": "hi"}
    assert [image.data for image in load_images(PNG)] == [PNG]
    assert load_images(None) == []
    with pytest.raises(InvalidRequestError, match=r"images\[1\]: "):
        load_images([PNG, b"nope"])


# -- the policies ------------------------------------------------------------------------------


def test_http_policy_never_reads_local_files(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(PNG)
    for source in (str(path), path.as_uri(), "file:///etc/passwd", "/etc/passwd", "cat.png"):
        part = {"type": "image_url", "image_url": {"url": source}}
        with pytest.raises(InvalidRequestError, match="local files are never read"):
            split_content([{"role": "user", "content": [part]}], policy=HTTP_POLICY)
    with pytest.raises(InvalidRequestError, match="local files are never read"):
        load_image(path)  # the default policy is the strict one
    assert load_image(path, policy=PYTHON_POLICY).data == PNG


def test_other_url_schemes_are_refused() -> None:
    for policy in (HTTP_POLICY, PYTHON_POLICY):
        with pytest.raises(InvalidRequestError, match="not ftp:"):
            load_image("ftp://example.com/cat.png", policy=policy)


def test_remote_urls_are_refused_unless_turned_on() -> None:
    for policy in (HTTP_POLICY, PYTHON_POLICY):
        with pytest.raises(InvalidRequestError, match="allow_remote_images"):
            load_image("https://example.com/cat.png", policy=policy)


# -- the address guard -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "169.254.170.2",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


class ImageServer:
    """A real HTTP server on 127.0.0.1 with a route per case; it records every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[str] = []
        self.hosts: list[str | None] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.hosts.append(self.headers.get("Host"))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.route(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def route(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        redirects = {
            "/to-cat": "/cat.png",
            "/to-loopback": f"http://127.0.0.2:{self.port}/cat.png",
            "/to-file": "file:///etc/passwd",
            "/loop": "/loop",
        }
        if path in redirects:
            handler.send_response(302)
            handler.send_header("Location", redirects[path])
            handler.end_headers()
        elif path == "/cat.png":
            self.reply(handler, "image/png", PNG)
        elif path == "/page":
            self.reply(handler, "text/html; charset=utf-8", b"<html></html>")
        elif path == "/big":  # no Content-Length: the cap must stop the stream itself
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.end_headers()
            for _ in range(64):
                handler.wfile.write(b"\x00" * 65536)
        elif path == "/big-declared":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", str(10**9))
            handler.end_headers()
        elif path == "/slow":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", str(len(PNG)))
            handler.end_headers()
            handler.wfile.flush()
            self.release.wait(10)
            handler.wfile.write(PNG)
        else:
            handler.send_error(404)

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, content_type: str, body: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@contextlib.contextmanager
def running(server: ImageServer) -> Iterator[ImageServer]:
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(5)


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    with running(ImageServer()) as server:
        yield server


def remote(check: Callable[[IPAddress], bool] = is_public_address) -> ImagePolicy:
    return ImagePolicy(allow_remote_images=True, is_allowed_address=check)


def test_the_guard_refuses_a_loopback_server(image_server: ImageServer) -> None:
    with pytest.raises(InvalidRequestError, match=r"to 127\.0\.0\.1, which is not a public"):
        load_image(image_server.url("/cat.png"), policy=remote())
    assert image_server.requests == []  # refused before connecting


def test_the_guard_refuses_a_name_that_resolves_to_loopback(image_server: ImageServer) -> None:
    with pytest.raises(InvalidRequestError, match="image host localhost resolves to"):
        fetch_remote(image_server.url("/cat.png", host="localhost"))
    with pytest.raises(InvalidRequestError, match="not a public"):
        fetch_remote(image_server.url("/cat.png", host="[::1]"))
    assert image_server.requests == []


def test_fetching_works_through_an_allowed_address(image_server: ImageServer) -> None:
    image = load_image(image_server.url("/to-cat"), policy=remote(allow_all))
    assert image.data == PNG
    assert image_server.requests == ["/to-cat", "/cat.png"]


def test_a_redirect_to_loopback_is_refused(image_server: ImageServer) -> None:
    only_first_host = ipaddress.ip_address("127.0.0.1")

    def check(address: IPAddress) -> bool:  # 127.0.0.1 stands in for a public host
        return address == only_first_host

    with pytest.raises(InvalidRequestError, match=r"resolves to 127\.0\.0\.2"):
        fetch_remote(image_server.url("/to-loopback"), is_allowed_address=check)
    assert image_server.requests == ["/to-loopback"]


def test_redirects_are_bounded_and_stay_on_http(image_server: ImageServer) -> None:
    with pytest.raises(InvalidRequestError, match="max_redirects=3"):
        fetch_remote(image_server.url("/loop"), is_allowed_address=allow_all)
    assert image_server.requests == ["/loop"] * 4
    with pytest.raises(InvalidRequestError, match="not file:"):
        fetch_remote(image_server.url("/to-file"), is_allowed_address=allow_all)


def test_the_size_cap_stops_the_stream(image_server: ImageServer) -> None:
    limits = ImageLimits(max_bytes=100_000)
    with pytest.raises(InvalidRequestError, match=r"over 100,000 bytes; .*max_bytes=100,000"):
        fetch_remote(image_server.url("/big"), limits=limits, is_allowed_address=allow_all)
    with pytest.raises(InvalidRequestError, match=r"1,000,000,000 bytes; .*max_bytes=100,000"):
        fetch_remote(image_server.url("/big-declared"), limits=limits, is_allowed_address=allow_all)


def test_only_image_content_types_are_fetched(image_server: ImageServer) -> None:
    with pytest.raises(InvalidRequestError, match="Content-Type 'text/html', not an image"):
        fetch_remote(image_server.url("/page"), is_allowed_address=allow_all)
    with pytest.raises(InvalidRequestError, match="HTTP 404"):
        fetch_remote(image_server.url("/missing"), is_allowed_address=allow_all)


def test_a_slow_server_times_out(image_server: ImageServer) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequestError, match=r"fetch_timeout=0\.5 s"):
        fetch_remote(
            image_server.url("/slow"),
            limits=ImageLimits(fetch_timeout=0.5),
            is_allowed_address=allow_all,
        )
    assert time.monotonic() - started < 3


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for the name ``localhost`` only (no IP)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlxnb test CA")])
    usage = {
        name: False
        for name in (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        )
    }
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def test_https_is_pinned_but_verified_against_the_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_path, cert_path, key_path = make_certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))  # the client trusts the test CA only
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    server_names: list[str | None] = []
    tls.sni_callback = lambda connection, name, context: server_names.append(name)
    with running(ImageServer(tls)) as server:
        url = server.url("/cat.png", host="localhost", scheme="https")
        assert fetch_remote(url, is_allowed_address=allow_all) == PNG
        assert server_names == ["localhost"]  # SNI names the host, not the pinned address
        assert server.hosts == [f"localhost:{server.port}"]
        # the certificate is checked against the URL's host: an IP URL does not match it
        with pytest.raises(InvalidRequestError, match=r"(?i)certificate verify failed"):
            fetch_remote(server.url("/cat.png", scheme="https"), is_allowed_address=allow_all)
        assert server.requests == ["/cat.png"]


def test_credentials_and_odd_schemes_in_urls_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="credentials"):
        fetch_remote("http://user:pw@example.com/cat.png")
    with pytest.raises(InvalidRequestError, match="not gopher:"):
        fetch_remote("gopher://example.com/")


# -- thumbnails and hashes ---------------------------------------------------------------------


def test_thumbnails_fit_the_budget_and_keep_the_aspect_ratio() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (500, 1000, 3), dtype=np.uint8)
    image = load_image(noise)
    url = image.thumbnail_data_url()
    assert url.startswith("data:image/jpeg;base64,") and len(url) <= 30_000
    thumbnail = PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert thumbnail.size == (256, 128)
    tight = image.thumbnail_data_url(max_bytes=4_000)
    assert len(tight) <= 4_000
    small = PILImage.open(io.BytesIO(base64.b64decode(tight.split(",", 1)[1])))
    assert abs(small.width / small.height - 2) < 0.05


def test_thumbnails_never_enlarge_and_flatten_transparency() -> None:
    image = load_image(gradient(50, 30, mode="RGBA"))
    url = image.thumbnail_data_url()
    thumbnail = PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert (thumbnail.size, thumbnail.mode) == ((50, 30), "RGB")
    assert image.to_rgb().mode == "RGB"


def test_data_url_round_trips() -> None:
    image = load_image(PNG)
    assert image.data_url() == data_url(PNG)
    assert load_image(image.data_url()) == image


def test_sha256_is_stable_and_tells_images_apart() -> None:
    array = pixels(gradient())
    first, again = load_image(array), load_image(array.copy())
    other = load_image(pixels(gradient().rotate(90)))
    assert first.sha256 == again.sha256 == hashlib.sha256(first.data).hexdigest()
    assert first.sha256 != other.sha256
    summary = first.summary()
    assert summary == {
        "sha256": first.sha256,
        "format": "PNG",
        "width": 40,
        "height": 24,
        "bytes": len(first.data),
    }
    assert "data" not in repr(first) and first.sha256 in repr(first)
