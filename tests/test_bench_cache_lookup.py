"""bench_cache_lookup times mlx-lm's prompt-cache lookup beside ours, per store size."""

from __future__ import annotations

import json
from pathlib import Path

from bench.bench_cache_lookup import main


def test_each_store_size_reports_both_lookups_and_their_ratio(tmp_path: Path) -> None:
    out = tmp_path / "lookup.json"

    small = ["--rounds", "3", "--layers", "2", "--tokens", "20", "--prompt", "5"]
    main(["--entries", "1,4", *small, "--json", str(out)])

    results = json.loads(out.read_text())["results"]
    assert set(results["runs"]) == {"1", "4"}
    rows = [row for rows in results["runs"].values() for row in rows]
    assert len(rows) == 6 and all(row["mlx_lm"] > 0 and row["ours"] > 0 for row in rows)
    assert set(results["figures"]) == {
        f"{name}_{entries}" for name in ("mlx_lm_us", "ours_us", "speedup") for entries in (1, 4)
    }
