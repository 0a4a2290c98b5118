"""Images in the chat widget: sent from the page as data URLs or from Python, checked before a
turn starts, kept in the transcript as small thumbnails only; the real Qwen3-VL fixture model
answers one."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from widget_fakes import Wire, from_page

import mlxnb
from mlxnb._images import Image
from mlxnb._widget import ChatWidget
from mlxnb.errors import InvalidRequestError
from mlxnb.testing import FakeEngine, fake_reply, forced_output, tiny_vision_model

THUMBNAIL_LIMIT = 30_000


class VisionFake(FakeEngine):
    """A fake engine that says it is a vision model, as ``Engine.kind`` does once loaded."""

    kind = "vision"


class TextFake(FakeEngine):
    """A fake engine that says it is a text-only model."""

    kind = "text"


def noise_png(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    """A PNG of random pixels: it does not compress, so it is far larger than a thumbnail."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_parts(message: Any) -> list[Image]:
    content = message["content"]
    assert isinstance(content, list), content
    return [part["image"] for part in content if part.get("type") == "image"]


def thumbnail_size(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/jpeg;base64,"), url[:40]
    assert len(url) < THUMBNAIL_LIMIT
    with PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as picture:
        assert picture.format == "JPEG"
        return picture.size


@pytest.fixture
def widgets() -> Iterator[list[ChatWidget]]:
    made: list[ChatWidget] = []
    yield made
    for widget in made:
        widget.close()


def open_widget(made: list[ChatWidget], engine: Any, **options: Any) -> tuple[ChatWidget, Wire]:
    widget = ChatWidget(engine, **options)
    made.append(widget)
    return widget, Wire(widget)


async def test_supports_images_follows_the_engine_kind(widgets: list[ChatWidget]) -> None:
    vision, _ = open_widget(widgets, VisionFake())
    text, _ = open_widget(widgets, TextFake())
    unknown, _ = open_widget(widgets, FakeEngine())
    assert (vision.supports_images, text.supports_images, unknown.supports_images) == (
        True,
        False,
        False,
    )
    loading = VisionFake(ready=False)
    widget, _ = open_widget(widgets, loading)
    assert widget.supports_images is False, "the kind is unknown until the model has loaded"
    loading.finish_loading()
    await widget.ask("hi")
    assert widget.supports_images is True


async def test_images_from_the_page_reach_the_model_and_the_transcript_keeps_thumbnails(
    widgets: list[ChatWidget],
) -> None:
    fake = VisionFake([fake_reply("Two pictures.")])
    widget, wire = open_widget(widgets, fake)
    sent = [data_url(noise_png(640, 480, seed=1)), data_url(noise_png(300, 600, seed=2))]
    from_page(widget, {"type": "send", "text": "What are these?", "images": sent})
    assert widget._task is not None
    turn = await widget._task
    assert turn is not None and turn.content == "Two pictures."
    [user] = [m for m in fake.calls[0].messages if m["role"] == "user"]
    assert [(i.format, i.width, i.height) for i in image_parts(user)] == [
        ("PNG", 640, 480),
        ("PNG", 300, 600),
    ]
    assert [i.data_url() for i in image_parts(user)] == sent, "the model sees the images whole"
    assert user["content"][-1] == {"type": "text", "text": "What are these?"}
    [start] = wire.customs("start")
    entry = widget.transcript[-1]
    assert start["turn"]["images"] == entry["images"]
    assert [thumbnail_size(url) for url in entry["images"]] == [(256, 192), (128, 256)]
    assert all(
        len(url) * 10 < len(original) for url, original in zip(entry["images"], sent, strict=True)
    )
    assert entry["user"] == "What are these?"
    assert entry["parts"] == [{"kind": "content", "text": "Two pictures."}]


async def test_an_image_with_no_text_can_be_sent(widgets: list[ChatWidget]) -> None:
    fake = VisionFake()
    widget, _ = open_widget(widgets, fake)
    from_page(widget, {"type": "send", "text": "", "images": [data_url(noise_png(32, 32))]})
    assert widget._task is not None
    await widget._task
    assert len(widget.transcript[-1]["images"]) == 1
    assert len(image_parts(fake.calls[0].messages[-1])) == 1


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (["data:text/plain;base64,aGVsbG8="], "images[0]"),
        (["/etc/hostname"], "images[0]"),
        (["https://example.com/cat.png"], "images[0]"),
        ([data_url(b"not a png at all")], "images[0]"),
        ("data:image/png;base64,AAAA", "must be a list"),
        ([data_url(noise_png(8, 8))] * 9, "9"),
    ],
    ids=["not-an-image", "a-local-path", "a-remote-url", "broken-png", "not-a-list", "too-many"],
)
async def test_a_bad_image_from_the_page_is_refused_before_anything_starts(
    widgets: list[ChatWidget], images: Any, words: str
) -> None:
    fake = VisionFake()
    widget, wire = open_widget(widgets, fake)
    from_page(widget, {"type": "send", "text": "look", "images": images})
    [refused] = wire.customs("refused")
    assert words in refused["message"]
    assert not widget.busy and widget.status == "ready"
    assert (widget.transcript, fake.calls, wire.customs("start")) == ([], [], [])
    from_page(widget, {"type": "send", "text": "and now?"})  # the widget still works
    assert widget._task is not None
    await widget._task
    assert [t["user"] for t in widget.transcript] == ["and now?"]


async def test_a_text_only_model_refuses_images_in_the_chat_and_from_python(
    widgets: list[ChatWidget], engine: mlxnb.Engine
) -> None:
    widget, wire = open_widget(
        widgets,
        engine,
        generation_options=lambda: {
            "logits_processors": [forced_output(engine.tokenizer, "Only words.")]
        },
    )
    assert widget.supports_images is False
    from_page(widget, {"type": "send", "text": "look", "images": [data_url(noise_png(16, 16))]})
    [refused] = wire.customs("refused")
    assert "is a text-only model: it cannot see images (1 sent)" in refused["message"]
    with pytest.raises(InvalidRequestError, match="text-only model"):
        await widget.ask("look", images=np.zeros((8, 8, 3), dtype=np.uint8))
    assert widget.transcript == [] and widget.messages == []
    turn = await widget.ask("words then")
    assert turn.content == "Only words."


async def test_ask_from_python_takes_notebook_images(widgets: list[ChatWidget]) -> None:
    fake = VisionFake()
    widget, _ = open_widget(widgets, fake)
    array = np.full((100, 50, 3), 200, dtype=np.uint8)
    picture = PILImage.new("RGBA", (40, 40), (255, 0, 0, 128))
    await widget.ask("what?", images=[array, picture])
    assert [thumbnail_size(url) for url in widget.transcript[-1]["images"]] == [
        (50, 100),
        (40, 40),
    ]
    assert [(i.width, i.height) for i in image_parts(fake.calls[0].messages[-1])] == [
        (50, 100),
        (40, 40),
    ]


async def test_regenerate_sends_the_same_images_again(widgets: list[ChatWidget]) -> None:
    fake = VisionFake([fake_reply("first"), fake_reply("second")])
    widget, wire = open_widget(widgets, fake)
    await widget.ask("and this?", images=noise_png(64, 48))
    thumbnails = widget.transcript[0]["images"]
    from_page(widget, {"type": "regenerate"})
    assert widget._task is not None
    turn = await widget._task
    assert turn is not None and turn.content == "second"
    assert len(widget.transcript) == 1
    assert widget.transcript[0]["images"] == thumbnails
    assert widget.transcript[0]["parts"] == [{"kind": "content", "text": "second"}]
    assert wire.customs("start")[-1]["turn"]["images"] == thumbnails
    first, again = (image_parts(call.messages[-1]) for call in fake.calls)
    assert [i.sha256 for i in again] == [i.sha256 for i in first]
    assert [m["role"] for m in widget.messages] == ["user", "assistant"]


def describe(kind: str) -> str:
    """Describe a picture.

    Args:
        kind: What it shows.
    """
    return f"a {kind}"


async def test_images_work_with_the_thinking_and_tool_panes(widgets: list[ChatWidget]) -> None:
    fake = VisionFake(
        [
            fake_reply(reasoning="A red square?", tool_calls=[("describe", {"kind": "square"})]),
            fake_reply("It is a square.", reasoning="The tool agrees."),
        ]
    )
    widget, _ = open_widget(widgets, fake, tools=[describe])
    await widget.ask("What is it?", images=noise_png(20, 20))
    entry = widget.transcript[-1]
    assert len(entry["images"]) == 1
    assert [p["kind"] for p in entry["parts"]] == ["thinking", "tool", "thinking", "content"]
    assert entry["parts"][1]["result"] == "a square"
    # the tool round resends the history: the image stays in the user's message
    assert [len(image_parts(call.messages[0])) for call in fake.calls] == [1, 1]
    assert fake.calls[0].enable_thinking is True


# -- the real vision model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def vision() -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_vision_model(), audit=False) as engine:
        yield engine


async def test_the_vision_model_answers_an_image_sent_from_the_page(
    widgets: list[ChatWidget], vision: mlxnb.Engine
) -> None:
    answer = "A noisy square, **mostly grey**."
    widget, wire = open_widget(
        widgets,
        vision,
        enable_thinking=False,
        generation_options=lambda: {
            "logits_processors": [forced_output(vision.tokenizer, answer)],
            "max_tokens": 64,
        },
    )
    assert widget.supports_images is True
    original = data_url(noise_png(1024, 768, seed=3))
    from_page(widget, {"type": "send", "text": "What is this?", "images": [original]})
    assert widget._task is not None
    turn = await widget._task
    assert turn is not None and turn.finish_reason == "stop", turn.error
    assert "".join(op[1] for op in wire.ops() if op[0] == "text") == answer == turn.content
    assert len(wire.customs("ops")) >= 1
    entry = widget.transcript[-1]
    assert (entry["status"], entry["user"]) == ("done", "What is this?")
    [thumbnail] = entry["images"]
    assert thumbnail_size(thumbnail) == (256, 192)
    assert len(thumbnail) < THUMBNAIL_LIMIT < len(original) / 30
    [image] = image_parts(widget.messages[0])
    assert image.data_url() == original, "the model saw the whole image, not the thumbnail"
