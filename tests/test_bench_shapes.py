"""bench_shapes runs raw forward passes over new shapes and reports first vs second call."""

from __future__ import annotations

import json
from pathlib import Path

from bench.bench_shapes import main


def test_every_case_reports_both_calls_and_the_distinct_run(tmp_path: Path) -> None:
    out = tmp_path / "shapes.json"

    main(["--lengths", "2", "--batch", "2", "--long", "16", "--distinct", "3", "--json", str(out)])

    results = json.loads(out.read_text())["results"]
    runs = results["runs"]
    assert set(runs) == {
        "lone prompt",
        "lone prompt after a 64-token cached prefix",
        "batch of 2 prompts",
        "32-token prompt after a cached prefix of that length",
        "long prompt",
        "decode step after a prompt of that length",
        "distinct",
    }
    assert [row["length"] for row in runs["lone prompt"]] == [120, 123]
    assert [row["length"] for row in runs["long prompt"]] == [16]
    timed = [row for name, rows in runs.items() if name != "distinct" for row in rows]
    assert all(row["first_ms"] > 0 and row["second_ms"] > 0 for row in timed)
    assert runs["distinct"] == [
        {"length": 3, "seconds": runs["distinct"][0]["seconds"], "error": None}
    ]
    assert len(results["figures"]) == 6
