"""Descriptions of notebook values (``mlxnb._describe``): one per kind of value, always bounded."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np
import pandas as pd
import pytest

from mlxnb._describe import CUT, MAX_CHARS, cut, describe, kind_of


def test_a_dataframe_shows_its_shape_dtypes_and_head() -> None:
    df = pd.DataFrame({"city": ["Paris", "Oslo", "Rome"] * 4, "celsius": np.arange(12.0)})
    d = describe("df", df)
    assert d.kind == "DataFrame 12x2"
    lines = d.text.splitlines()
    assert lines[0] == "df: pandas DataFrame, 12 rows, 2 columns"
    assert "  city: object" in lines or "  city: str" in lines
    assert "  celsius: float64" in lines
    assert "first 5 rows:" in lines
    assert "Paris" in d.text and "Rome" in d.text
    assert "11.0" not in d.text, "only the head is shown"
    assert d.figure is None


def test_a_wide_long_dataframe_stays_bounded() -> None:
    wide = pd.DataFrame(np.zeros((10_000, 200)), columns=[f"column_{i}" for i in range(200)])
    d = describe("wide", wide)
    assert len(d.text) <= MAX_CHARS
    assert "… and 170 more columns" in d.text
    assert "column_199" not in d.text.split("first 5 rows:")[0]


def test_an_empty_dataframe_has_no_rows_section() -> None:
    d = describe("empty", pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    assert d.text == "empty: pandas DataFrame, 0 rows, 1 columns\ncolumns (dtype):\n  a: int64"


def test_a_series_shows_its_length_dtype_and_first_values() -> None:
    s = pd.Series([3, 1, 4, 1, 5, 9, 2, 6], name="digits")
    d = describe("s", s)
    assert d.kind == "Series (8)"
    assert d.text.startswith("s: pandas Series 'digits', 8 values, dtype int64\nfirst 5 values:")
    assert d.text.splitlines()[-1].split() == ["4", "5"]


def test_a_numpy_array_shows_shape_and_dtype() -> None:
    d = describe("x", np.zeros((3, 4), dtype=np.float32))
    assert (d.kind, d.text) == ("ndarray 3x4", "x: numpy array, shape (3, 4), dtype float32")


def test_an_mlx_array_shows_shape_and_dtype() -> None:
    d = describe("w", mx.ones((2, 5), dtype=mx.bfloat16))
    assert (d.kind, d.text) == ("array 2x5", "w: MLX array, shape (2, 5), dtype bfloat16")


def test_a_function_shows_its_signature_and_docstring() -> None:
    def area(width: float, height: float = 1.0) -> float:
        """Area of a rectangle.

        Args:
            width: Its width.
        """
        return width * height

    d = describe("area", area)
    assert d.kind == "function"
    first, *rest = d.text.splitlines()
    assert first.startswith("area: function ")
    assert first.endswith("area(width: float, height: float = 1.0) -> float")
    assert rest[0] == '"""Area of a rectangle.'
    assert "width: Its width." in d.text


def test_a_class_and_a_builtin_are_described_as_callables() -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

    assert describe("Point", Point).text.splitlines()[0].endswith("Point(x: int, y: int) -> None")
    assert describe("Point", Point).kind == "class"
    assert describe("length", len).text.startswith("length: function len(obj, /)")


def test_a_long_docstring_is_cut() -> None:
    def chatty() -> None:
        pass

    chatty.__doc__ = "word " * 1000
    d = describe("chatty", chatty)
    assert CUT in d.text and len(d.text) < 900


def test_a_figure_is_described_and_handed_over() -> None:
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([1, 2, 3], [1, 4, 9])
    ax.set(title="Squares", xlabel="n", ylabel="n²")
    try:
        d = describe("fig", fig)
    finally:
        plt.close(fig)
    assert d.kind == "Figure"
    assert d.figure is fig
    assert d.text == (
        "fig: matplotlib figure, 400x300 px, 1 axes\n"
        "  axes 1: title 'Squares', x 'n', y 'n²'; 1 artists"
    )


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (42, "int", "n: int = 42"),
        ("hi", "str", "n: str = 'hi'"),
        ({"a": [1, 2]}, "dict", "n: dict = {'a': [1, 2]}"),
    ],
)
def test_other_values_are_a_repr(value: object, kind: str, text: str) -> None:
    d = describe("n", value)
    assert (d.kind, d.text) == (kind, text)


def test_a_huge_repr_is_bounded() -> None:
    d = describe("big", list(range(100_000)))
    assert d.text.startswith("big: list = [0, 1, 2")
    assert len(d.text) < 200


def test_a_failing_repr_is_reported_not_raised() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    text = describe("b", Broken()).text
    assert text.startswith("b: ") and ".Broken = <Broken instance at 0x" in text


def test_cut_marks_what_it_drops() -> None:
    assert cut("short", 10) == "short"
    assert cut("x" * 50, 20) == "x" * (20 - len(CUT)) + CUT
    assert len(cut("x" * 50, 20)) == 20


def test_kind_of_an_object_with_shape_but_no_dtype_is_its_type() -> None:
    class Shaped:
        shape = (2, 2)

    assert kind_of(Shaped()) == "Shaped"
