"""bench.bench_vision_cache: the warm side's next turn comes from the cache, the cold one's not."""

from __future__ import annotations

import json
from pathlib import Path

from bench.bench_vision_cache import main


def test_the_warm_turn_is_served_from_the_cache_and_both_sides_are_timed(tmp_path: Path) -> None:
    out = tmp_path / "vision-cache.json"
    main(["--shape", "tiny", "--pairs", "2", "--image-side", "64", "--json", str(out)])
    results = json.loads(out.read_text())["results"]
    figures = results["figures"]
    # Everything before the first answer comes from the cache: the picture and the question.
    assert all(
        0 < cached < results["prompt_tokens"] for cached in figures["cached_tokens"]["values"]
    )
    assert min(figures["cached_tokens"]["values"]) > results["prompt_tokens"] // 4
    assert figures["cold_over_warm_ttft"]["n"] == 2
    assert all(
        ms > 0 for ms in figures["warm_ttft_ms"]["values"] + figures["cold_ttft_ms"]["values"]
    )
    # The turn adding a picture, timed on both engines in every pair.
    assert figures["rerun_over_kept_ttft"]["n"] == 2
    assert all(
        ms > 0 for ms in figures["kept_ttft_ms"]["values"] + figures["rerun_ttft_ms"]["values"]
    )
