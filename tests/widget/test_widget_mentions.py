"""``@name`` mentions in the chat widget: the names the page may complete, and what a sent
message's mentions add for the model (and show on the page)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from widget_fakes import Wire, from_page

from mlxnb._widget import ChatWidget
from mlxnb._widget.mentions import (
    HEADER,
    UNKNOWN,
    find_mentions,
    namespace_names,
    resolve_mentions,
)
from mlxnb.testing import FakeEngine


class VisionFake(FakeEngine):
    kind = "vision"


class TextFake(FakeEngine):
    kind = "text"


def area(width: float, height: float = 1.0) -> float:
    """Area of a rectangle."""
    return width * height


@pytest.fixture
def namespace() -> Iterator[dict[str, Any]]:
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    ax.plot([1, 2], [3, 4])
    ax.set_title("Line")
    yield {
        "df": pd.DataFrame({"city": ["Paris", "Oslo"], "celsius": [21.0, 9.5]}),
        "area": area,
        "fig": fig,
        "plt": plt,  # a module: not offered
        "_hidden": 1,
        "In": [],
        "count": 3,
    }
    plt.close(fig)


@pytest.fixture
def widgets() -> Iterator[list[ChatWidget]]:
    made: list[ChatWidget] = []
    yield made
    for widget in made:
        widget.close()


def test_names_are_the_users_variables_only(namespace: dict[str, Any]) -> None:
    assert namespace_names(namespace, hidden={"In"}) == [
        ("area", "function"),
        ("count", "int"),
        ("df", "DataFrame 2x2"),
        ("fig", "Figure"),
    ]


def test_mentions_are_found_outside_code_and_emails() -> None:
    text = "Compare @df with @area, mail me@host.org, @df again\n```\n@skip\n```\nand `@code`"
    assert find_mentions(text) == ["df", "area"]


def test_a_message_without_mentions_is_unchanged(namespace: dict[str, Any]) -> None:
    resolved = resolve_mentions("just text", namespace)
    assert (resolved.message, resolved.context, resolved.images) == ("just text", [], [])


def test_known_names_add_descriptions_unknown_ones_a_note(namespace: dict[str, Any]) -> None:
    resolved = resolve_mentions("Plot @df using @area and @nothing", namespace)
    text, header, first, second = resolved.message.split("\n\n")
    assert (text, header) == ("Plot @df using @area and @nothing", HEADER)
    assert first.startswith("@df (DataFrame 2x2):\n```\ndf: pandas DataFrame, 2 rows, 2 columns")
    assert "Paris" in first
    assert second.startswith("@area (function):\n```\narea: function area(width: float")
    assert [(c["name"], c["found"]) for c in resolved.context] == [
        ("df", True),
        ("area", True),
        ("nothing", False),
    ]
    assert resolved.context[2]["text"] == UNKNOWN
    assert resolved.context[0]["text"] in first


def test_hidden_and_module_names_are_not_resolved(namespace: dict[str, Any]) -> None:
    resolved = resolve_mentions("@plt @_hidden @In", namespace, hidden={"In"})
    assert resolved.message == "@plt @_hidden @In"
    assert [c["found"] for c in resolved.context] == [False, False, False]


def test_a_figure_is_attached_for_a_vision_model(namespace: dict[str, Any]) -> None:
    seen = resolve_mentions("What is in @fig?", namespace, vision=True)
    [image] = seen.images
    assert (image.format, image.width, image.height) == ("PNG", 150, 100)
    assert seen.context[0]["image"].startswith("data:image/jpeg;base64,")
    assert "attached as image 1" in seen.message
    described = resolve_mentions("What is in @fig?", namespace, vision=False)
    assert described.images == [] and "image" not in described.context[0]
    assert "cannot see images" in described.message
    assert "title 'Line'" in described.message


async def test_the_page_asks_for_names(
    widgets: list[ChatWidget], namespace: dict[str, Any]
) -> None:
    widget = ChatWidget(FakeEngine(), namespace=namespace)
    widgets.append(widget)
    wire = Wire(widget)
    from_page(widget, {"type": "names"})
    [reply] = wire.customs("names")
    names = [name for name, _ in reply["names"]]
    assert names == ["In", "area", "count", "df", "fig"], "a given namespace hides nothing more"
    assert ["df", "DataFrame 2x2"] in reply["names"]


async def test_a_sent_mention_reaches_the_model_and_the_page(
    widgets: list[ChatWidget], namespace: dict[str, Any]
) -> None:
    engine = TextFake()
    widget = ChatWidget(engine, namespace=namespace)
    widgets.append(widget)
    wire = Wire(widget)
    from_page(widget, {"type": "send", "text": "Summarise @df and @ghost"})
    assert widget._task is not None
    await widget._task
    [call] = engine.calls
    sent = call.messages[-1]["content"]
    assert sent.startswith("Summarise @df and @ghost\n\n" + HEADER)
    assert "df: pandas DataFrame, 2 rows, 2 columns" in sent
    assert "ghost" not in sent.split(HEADER)[1]
    [start] = wire.customs("start")
    entry = widget.transcript[-1]
    assert start["turn"]["user"] == entry["user"] == "Summarise @df and @ghost"
    assert start["turn"]["context"] == entry["context"]
    assert [(c["name"], c["found"]) for c in entry["context"]] == [("df", True), ("ghost", False)]
    await widget.regenerate()
    again = widget.transcript[-1]
    assert (again["user"], again["context"]) == (entry["user"], entry["context"])
    assert engine.calls[-1].messages[-1]["content"] == sent


async def test_a_mentioned_figure_goes_to_a_vision_model_as_an_image(
    widgets: list[ChatWidget], namespace: dict[str, Any]
) -> None:
    engine = VisionFake()
    widget = ChatWidget(engine, namespace=namespace)
    widgets.append(widget)
    await widget.ask("Describe @fig")
    content = engine.calls[-1].messages[-1]["content"]
    images = [part["image"] for part in content if part.get("type") == "image"]
    assert [(i.width, i.height) for i in images] == [(150, 100)]
    assert widget.transcript[-1]["images"] == [], "the figure shows in its context entry"
    assert widget.transcript[-1]["context"][0]["image"].startswith("data:image/jpeg")
