"""bench.report: reports are indented JSON, compact once indenting would make them large."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import COMPACT_OVER, dump


@pytest.mark.parametrize(("values", "indented"), [(10, True), (COMPACT_OVER // 10, False)])
def test_a_report_is_indented_unless_that_makes_it_large(
    tmp_path: Path, values: int, indented: bool
) -> None:
    data = {"runs": [{"value": 1.5, "missing": float("nan")} for _ in range(values)]}
    out = tmp_path / "report.json"
    dump(data, out)
    text = out.read_text()
    assert ("\n  " in text) is indented
    assert json.loads(text) == {"runs": [{"value": 1.5, "missing": None}] * values}
