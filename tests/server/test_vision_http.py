"""Images over ``/v1``: the official ``openai`` client, a vision fixture model, and the refusals."""

from __future__ import annotations

import base64
import http.server
import io
import socketserver
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

import mlxnb
from mlxnb._server.background import ServerHandle, serve
from mlxnb.events import Event
from mlxnb.testing import forced_output, tiny_vision_model


class SaysWhatItIsTold:
    """The real engine; a text part ``say:TEXT`` makes the model emit exactly ``TEXT``."""

    def __init__(self, engine: mlxnb.Engine) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Any = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        content = messages[-1].get("content") if messages else None
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            text = part.get("text") if isinstance(part, Mapping) else None
            if isinstance(text, str) and text.startswith("say:"):
                forced = forced_output(self.engine.tokenizer, text.removeprefix("say:"))
                options["logits_processors"] = [forced]
        return self.engine.stream(messages, tools, enable_thinking, **options)


@pytest.fixture(scope="module")
def vision() -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_vision_model(), audit=mlxnb.AuditLog(":memory:")) as engine:
        yield engine


@pytest.fixture(scope="module")
def vision_server(vision: mlxnb.Engine) -> Iterator[ServerHandle]:
    with serve(SaysWhatItIsTold(vision)) as handle:
        yield handle


@pytest.fixture
def vclient(vision_server: ServerHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vision_server.url, api_key="-", max_retries=0) as client:
        yield client


def png_data_url(seed: int = 0, height: int = 64, width: int = 96) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def bomb_data_url() -> str:
    """A tiny PNG whose header claims 100 000 x 100 000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


def with_image(url: str, text: str = "say:A red square.") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        }
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_openai_client_sends_a_data_url_image(
    vclient: openai.OpenAI, vision: mlxnb.Engine, stream: bool
) -> None:
    options: dict[str, Any] = {
        "model": vision.model_id,
        "messages": with_image(png_data_url()),
        "max_tokens": 16,
        "extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
    }
    if stream:
        chunks = vclient.chat.completions.create(**options, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        reply = vclient.chat.completions.create(**options)
        text = reply.choices[0].message.content or ""
        assert reply.usage is not None and reply.usage.prompt_tokens > 10
    assert text == "A red square."
    row = vision.audit.df.iloc[-1]  # type: ignore[union-attr]
    assert (row["source"], row["image_count"]) == ("server", 1)


def refusal(url: str, server: ServerHandle, model: str) -> httpx.Response:
    body = {"model": model, "messages": with_image(url), "max_tokens": 4}
    return httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("data:text/plain;base64,aGVsbG8=", "image"),
        ("data:image/png;base64,bm90IGFuIGltYWdl", "image"),
        (bomb_data_url(), "max_pixels"),
        ("file:///etc/passwd", "local file"),
        ("/etc/passwd", "local file"),
        ("https://example.com/cat.png", "remote"),
    ],
    ids=["not-an-image", "bad-bytes", "pixel-bomb", "file-url", "path", "remote-off"],
)
def test_unusable_images_get_an_openai_shaped_400(
    vision_server: ServerHandle, vision: mlxnb.Engine, url: str, says: str
) -> None:
    response = refusal(url, vision_server, vision.model_id)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and says in error["message"]
    assert refusal(png_data_url(), vision_server, vision.model_id).status_code == 200


def test_an_image_to_a_text_model_is_a_400_naming_it(server: ServerHandle, model_id: str) -> None:
    response = refusal(png_data_url(), server, model_id)
    assert response.status_code == 400
    assert "text-only model: it cannot see images" in response.json()["error"]["message"]


class _OneImage(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        payload = base64.b64decode(png_data_url().split(",", 1)[1])
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_remote_url_to_loopback_is_refused_even_when_remote_images_are_on() -> None:
    with (
        socketserver.TCPServer(("127.0.0.1", 0), _OneImage) as site,
        mlxnb.load(tiny_vision_model(), audit=False, allow_remote_images=True) as engine,
        serve(engine) as handle,
    ):
        threading.Thread(target=site.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{site.server_address[1]}/cat.png"
            response = refusal(url, handle, engine.model_id)
        finally:
            site.shutdown()
    assert response.status_code == 400 and "address" in response.json()["error"]["message"]
    assert _OneImage.hits == 0  # refused before connecting
