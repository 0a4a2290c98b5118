"""bench.prefill_chunks: each chunk size is run through real mlx-lm and reported."""

from __future__ import annotations

import json
from pathlib import Path

from bench.prefill_chunks import main


def test_each_chunk_size_reports_its_first_token_and_a_smaller_peak_for_smaller_chunks(
    tmp_path: Path,
) -> None:
    out = tmp_path / "chunks.json"
    main(
        [
            "--shape",
            "tiny",
            "--prompt",
            "600",
            "--chunks",
            "512",
            "128",
            "--rounds",
            "2",
            "--json",
            str(out),
        ]
    )

    figures = json.loads(out.read_text())["results"]["figures"]
    assert sorted(figures) == ["peak_128_gb", "peak_512_gb", "ttft_128_s", "ttft_512_s"]
    for name in ("ttft_512_s", "ttft_128_s"):
        assert figures[name]["n"] == 2 and figures[name]["min"] > 0
    # The chunk size reaches mlx-lm: a pass over 128 tokens holds smaller score matrices.
    assert figures["peak_128_gb"]["max"] < figures["peak_512_gb"]["min"]
